"""The measuring stages of a language-model run: the original and the compressed folder on
the same evaluation windows (perplexity, next-token agreement), in interleaved decode rounds
(tokens/s, prefill, time to first token), in a child process each (peak memory), and on the
same prompts (answers side by side)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress_engine.llm.decode_speed import DecodeComparison
from compress_engine.llm.perplexity import PerplexityComparison
from compress_engine.llm.stage_plan import ANSWERS, DECODE, MEMORY, PERPLEXITY
from compress_engine.llm.text_data import TextWindows
from compress_engine.pipeline.state import Run
from compress_engine.report_llm import Generation


@dataclass
class LlmMeasured:
    perplexity: PerplexityComparison
    decode: DecodeComparison
    memory: tuple[float | None, float | None]  # peak RSS MB, original and compressed
    generations: list[Generation]


def measure(run: Run, original: Path, compressed: Path, windows: TextWindows) -> LlmMeasured:
    from compress_engine.llm.decode_speed import interleaved_decode
    from compress_engine.llm.generate import side_by_side
    from compress_engine.llm.perplexity import compare_perplexity

    ev = run.ev.llm
    run.tracker.stage(*PERPLEXITY)
    ppl = compare_perplexity(original, compressed, windows.evaluation, threads=run.threads)
    run.tracker.stage(*DECODE)
    decode = interleaved_decode(
        original,
        compressed,
        tokens=ev.decode_tokens,
        rounds=ev.decode_rounds,
        prompt_ids=_prompt_ids(original, ev.prompts),
        prefill_ids=[int(t) for t in windows.evaluation[0]],
        threads=run.threads,
    )
    memory: tuple[float | None, float | None] = (None, None)
    if ev.measure_memory:
        from compress_engine.llm.memory import peak_rss_mb

        run.tracker.stage(*MEMORY)
        memory = tuple(  # type: ignore[assignment]
            peak_rss_mb(folder, tokens=ev.decode_tokens, threads=run.threads)
            for folder in (original, compressed)
        )
    # Without the memory stage the answers start where decode timing ends (stage_plan).
    run.tracker.stage(*(ANSWERS if ev.measure_memory else (ANSWERS[0], DECODE[2], ANSWERS[2])))
    generations = side_by_side(
        original, compressed, ev.prompts, max_new_tokens=ev.answer_tokens, threads=run.threads
    )
    return LlmMeasured(ppl, decode, memory, generations)


def _prompt_ids(folder: Path, prompts: list[str]) -> list[list[int]]:
    """The prompts' tokens (no chat template: the timing only needs realistic lengths)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = [tokenizer.encode(p).ids for p in prompts or ["Hello"]]
    return [i for i in ids if i] or [[0]]
