from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from compress_engine.errors import EngineError
from compress_engine.llm.perplexity import Scorer, compare_perplexity, perplexity
from compress_engine.llm.text_data import bundled_prose, token_windows


@pytest.fixture(scope="module")
def windows(tiny_genai_dir: Path) -> np.ndarray:
    tokenizer = tiny_genai_dir / "tokenizer.json"
    cut = token_windows(bundled_prose(), tokenizer, window=48, calibration=0, evaluation=3, seed=0)
    return cut.evaluation


def test_it_matches_pytorch_on_the_hugging_face_model(tiny_hf_dir, tiny_genai_dir, windows):
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        losses = [
            model(input_ids=torch.tensor(w[None]), labels=torch.tensor(w[None])).loss.item()
            for w in windows
        ]
    # Equal-length windows: the mean of per-window mean losses is the mean over all positions.
    expected = math.exp(sum(losses) / len(losses))
    assert perplexity(tiny_genai_dir, windows, threads=1) == pytest.approx(expected, rel=1e-4)
    same = compare_perplexity(tiny_genai_dir, tiny_genai_dir, windows, threads=1)
    assert same.original_window_nll == pytest.approx(losses, abs=1e-4)


def test_a_model_agrees_with_itself_everywhere(tiny_genai_dir, windows):
    scorer = Scorer(tiny_genai_dir, threads=1)
    result = compare_perplexity(scorer, tiny_genai_dir, windows)
    assert result.next_token_agreement == 1.0
    assert result.original == result.compressed and result.delta_pct == 0.0
    assert result.positions == windows.shape[0] * (windows.shape[1] - 1)
    assert len(result.original_window_nll) == len(windows)
    assert perplexity(scorer, windows) == result.original


def test_it_tells_a_different_model_apart(tiny_genai_dir, noisy_genai_dir, windows):
    result = compare_perplexity(tiny_genai_dir, noisy_genai_dir, windows, threads=1)
    assert 0.0 <= result.next_token_agreement < 1.0
    assert result.compressed != result.original
    assert result.compressed == pytest.approx(perplexity(noisy_genai_dir, windows, threads=1))
    mean_nll = np.mean(result.compressed_window_nll)
    assert math.exp(mean_nll) == pytest.approx(result.compressed)


def test_it_refuses_empty_windows_and_folders_without_a_genai_config(tmp_path, tiny_genai_dir):
    with pytest.raises(EngineError, match="at least 2 tokens"):
        perplexity(tiny_genai_dir, np.zeros((0, 8), dtype=np.int64))
    with pytest.raises(EngineError, match=r"genai_config\.json"):
        Scorer(tmp_path)
