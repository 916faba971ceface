"""Greedy answers of an onnxruntime-genai folder to chat prompts, and the same prompts answered by
the original and the compressed model side by side for the report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compress_engine.errors import EngineError
from compress_engine.llm.genai_runtime import context_length, greedy, open_model
from compress_engine.llm_configs import DEFAULT_PROMPTS
from compress_engine.report_llm import Generation


def answer(
    folder: Path, prompts: Sequence[str], *, max_new_tokens: int, threads: int | None = None
) -> list[tuple[str, int, float]]:
    """(text, tokens generated, tokens/s) per prompt: the model's chat template applied (plain
    prompt when it has none), greedy, stopping at EOS or after `max_new_tokens`."""
    import onnxruntime_genai as og

    model = open_model(folder, threads=threads)
    tokenizer = og.Tokenizer(model)
    limit = context_length(folder)
    eos = set(int(t) for t in tokenizer.eos_token_ids)
    results = []
    for prompt in prompts:
        ids = [int(t) for t in tokenizer.encode(_chat(tokenizer, prompt))]
        if len(ids) >= limit:
            raise EngineError(f"the prompt is {len(ids)} tokens; {folder.name} takes {limit}.")
        generator = greedy(model, max_length=min(len(ids) + max_new_tokens, limit))
        new, tok_s = _run(generator, ids)
        while new and new[-1] in eos:
            new.pop()
        results.append((tokenizer.decode(new), len(new), tok_s))
    return results


def _chat(tokenizer: Any, prompt: str) -> str:
    """The prompt as one user turn; a base model without a template gets the bare prompt."""
    messages = json.dumps([{"role": "user", "content": prompt}])
    try:
        return str(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    except RuntimeError as exc:
        if "chat template" not in str(exc).lower():
            raise
        return prompt


def _run(generator: Any, ids: list[int]) -> tuple[list[int], float]:
    """New tokens and tokens/s after the first (the first carries the prompt's processing)."""
    start = time.perf_counter()
    generator.append_tokens(ids)
    generator.generate_next_token()
    first = time.perf_counter()
    made = 1
    while not generator.is_done():
        generator.generate_next_token()
        made += 1
    end = time.perf_counter()
    new = [int(t) for t in generator.get_sequence(0)[len(ids) :]]
    tok_s = (made - 1) / (end - first) if made > 1 else made / (end - start)
    return new, tok_s


def side_by_side(
    original: Path,
    compressed: Path,
    prompts: Sequence[str] = DEFAULT_PROMPTS,
    *,
    max_new_tokens: int = 64,
    threads: int | None = None,
) -> list[Generation]:
    """Each prompt answered by both models (one model loaded at a time)."""
    before = answer(original, prompts, max_new_tokens=max_new_tokens, threads=threads)
    after = answer(compressed, prompts, max_new_tokens=max_new_tokens, threads=threads)
    return [
        Generation(
            prompt=prompt,
            original=a_text,
            compressed=b_text,
            original_tok_s=a_speed,
            compressed_tok_s=b_speed,
            original_tokens=a_tokens,
            compressed_tokens=b_tokens,
        )
        for prompt, (a_text, a_tokens, a_speed), (b_text, b_tokens, b_speed) in zip(
            prompts, before, after, strict=True
        )
    ]
