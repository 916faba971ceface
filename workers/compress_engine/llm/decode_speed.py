"""Decode speed of two onnxruntime-genai folders, measured interleaved so both see the same
machine: greedy, batch 1, the same prompt and the same number of new tokens, rounds in ABBA order
(original, compressed, compressed, original, ...), which cancels a steady drift in machine load.

Per model and round: tokens/s over the generated tokens after the first (the first one's time,
prompt processing included, is the time to first token) and the time to process one full window
of prompt tokens (prefill).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress_engine.errors import EngineError
from compress_engine.llm.genai_runtime import context_length, greedy, open_model

_WARMUP_TOKENS = 4


@dataclass
class DecodeFigures:
    """One model's timings, one entry per round."""

    tok_s: list[float] = field(default_factory=list)
    ttft_ms: list[float] = field(default_factory=list)
    prefill_ms: list[float] = field(default_factory=list)

    @property
    def median_tok_s(self) -> float:
        return statistics.median(self.tok_s)

    @property
    def low_tok_s(self) -> float:
        return min(self.tok_s)

    @property
    def high_tok_s(self) -> float:
        return max(self.tok_s)

    @property
    def median_ttft_ms(self) -> float:
        return statistics.median(self.ttft_ms)

    @property
    def median_prefill_ms(self) -> float:
        return statistics.median(self.prefill_ms)


@dataclass(frozen=True)
class DecodeComparison:
    original: DecodeFigures
    compressed: DecodeFigures
    tokens: int  # generated per round
    rounds: int
    threads: int | None
    prefill_tokens: int

    @property
    def ratio(self) -> float:
        """Compressed / original median decode speed (> 1 = faster)."""
        return self.compressed.median_tok_s / self.original.median_tok_s


def interleaved_decode(
    original: Path,
    compressed: Path,
    *,
    tokens: int,
    rounds: int,
    prompt_ids: Sequence[Sequence[int]],
    prefill_ids: Sequence[int],
    threads: int | None,
) -> DecodeComparison:
    """Time both models round by round in ABBA order.

    Round r decodes from prompt `prompt_ids[r % len(prompt_ids)]` (so the time to first token
    covers every prompt when rounds >= prompts); `prefill_ids` is one window of tokens whose
    prompt processing is timed each round. EOS is suppressed (min_length) so both models
    generate exactly `tokens` tokens.
    """
    prompts = [[int(t) for t in p] for p in prompt_ids]
    window = [int(t) for t in prefill_ids]
    if tokens < 2 or rounds < 1 or not prompts or not all(prompts) or not window:
        raise EngineError("decode timing needs >= 2 tokens, >= 1 round and non-empty prompts.")
    folders = (original, compressed)
    longest = max(len(p) for p in prompts) + tokens
    for folder in folders:
        limit = context_length(folder)
        if max(longest, len(window) + 1) > limit:
            raise EngineError(f"{folder.name} takes {limit} tokens; the timed runs need more.")
    models = [open_model(folder, threads=threads) for folder in folders]
    for model in models:  # first runs allocate buffers: keep them out of the figures
        _decode(model, prompts[0], _WARMUP_TOKENS)
        _prefill(model, window)
    figures = (DecodeFigures(), DecodeFigures())
    for r in range(rounds):
        prompt = prompts[r % len(prompts)]
        for which in (0, 1) if r % 2 == 0 else (1, 0):
            ttft, tok_s = _decode(models[which], prompt, tokens)
            figures[which].ttft_ms.append(ttft * 1000)
            figures[which].tok_s.append(tok_s)
            figures[which].prefill_ms.append(_prefill(models[which], window) * 1000)
    return DecodeComparison(figures[0], figures[1], tokens, rounds, threads, len(window))


def _decode(model: Any, prompt: list[int], tokens: int) -> tuple[float, float]:
    """(seconds to the first token, tokens/s over the rest).

    genai computes logits lazily: append_tokens runs the prompt, each later
    generate_next_token runs the model on the previous token, then picks the next.
    """
    total = len(prompt) + tokens
    generator = greedy(model, max_length=total, min_length=total)
    start = time.perf_counter()
    generator.append_tokens(prompt)
    generator.generate_next_token()
    first = time.perf_counter()
    made = 1
    while not generator.is_done():
        generator.generate_next_token()
        made += 1
    end = time.perf_counter()
    if made != tokens:
        raise RuntimeError(f"generated {made} tokens, expected {tokens}")
    return first - start, (made - 1) / (end - first)


def _prefill(model: Any, window: list[int]) -> float:
    generator = greedy(model, max_length=len(window) + 1)
    start = time.perf_counter()
    generator.append_tokens(window)
    return time.perf_counter() - start
