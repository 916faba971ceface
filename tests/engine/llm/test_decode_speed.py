from __future__ import annotations

import pytest

from compress_engine.errors import EngineError
from compress_engine.llm.decode_speed import interleaved_decode

PROMPTS = [[1, 40, 41, 42], [1, 50, 51]]


def test_it_times_both_models_every_round(tiny_genai_dir, noisy_genai_dir):
    result = interleaved_decode(
        tiny_genai_dir,
        noisy_genai_dir,
        tokens=12,
        rounds=3,
        prompt_ids=PROMPTS,
        prefill_ids=list(range(3, 67)),
        threads=1,
    )
    assert (result.tokens, result.rounds, result.threads, result.prefill_tokens) == (12, 3, 1, 64)
    for figures in (result.original, result.compressed):
        assert len(figures.tok_s) == len(figures.ttft_ms) == len(figures.prefill_ms) == 3
        assert all(v > 0 for v in [*figures.tok_s, *figures.ttft_ms, *figures.prefill_ms])
        assert figures.low_tok_s <= figures.median_tok_s <= figures.high_tok_s
    assert result.ratio == result.compressed.median_tok_s / result.original.median_tok_s


def test_it_refuses_runs_longer_than_the_context(tiny_genai_dir):
    with pytest.raises(EngineError, match="takes 512 tokens"):
        interleaved_decode(
            tiny_genai_dir,
            tiny_genai_dir,
            tokens=600,
            rounds=1,
            prompt_ids=PROMPTS,
            prefill_ids=[5] * 8,
            threads=1,
        )
    with pytest.raises(EngineError, match="non-empty prompts"):
        interleaved_decode(
            tiny_genai_dir,
            tiny_genai_dir,
            tokens=4,
            rounds=1,
            prompt_ids=[[]],
            prefill_ids=[5] * 8,
            threads=1,
        )
