"""llm-auto: plans smallest first, ranked by int4 error, scored apart from the evaluation
windows, every plan recorded and one kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress_engine import compress
from compress_engine.llm.auto_precision import _int4_error, _plans, _predicted_bytes
from compress_engine.llm.weight_plan import WeightMatrix

FAST = {
    "window_tokens": 64,
    "evaluation_windows": 4,
    "decode_tokens": 8,
    "decode_rounds": 2,
    "answer_tokens": 4,
    "prompts": ["Hi"],
    "measure_memory": False,
}


def _matrix(name: str, nbytes: int, role: str = "mlp", block: int | None = 0) -> WeightMatrix:
    return WeightMatrix(name, "MatMul", role, block, (nbytes // 16, 4), nbytes, name + ".w")


def test_plans_move_the_first_then_the_last_block_before_ranked_matrices():
    matrices = [_matrix(f"m{b}", 400, block=b) for b in range(4)]
    matrices.append(_matrix("head", 200, "lm_head", block=None))
    base = {**{f"m{b}": 4 for b in range(4)}, "head": 8}
    plans = _plans(matrices, base, order=["m2", "m1", "m0", "m3"])
    eights = [sorted(n for n, bits in chosen.items() if bits == 8) for _, chosen in plans]
    assert eights[:4] == [
        ["head"],
        ["head", "m0"],
        ["head", "m0", "m3"],
        ["head", "m0", "m2", "m3"],  # then the most error-prone of the rest
    ]
    assert "first block int8, last block int8" in plans[2][0]


def test_heavy_tailed_weights_have_the_larger_int4_error():
    rng = np.random.default_rng(0)
    plain = rng.standard_normal((64, 8)).astype(np.float32)
    # Large weights in a block squeeze the others onto a few int4 levels.
    heavy = rng.standard_t(1.5, (64, 8)).astype(np.float32)
    assert _int4_error(heavy, 32) > 1.3 * _int4_error(plain, 32)
    assert _int4_error(np.zeros((32, 4), np.float32), 32) == 0.0


def test_plans_grow_and_move_the_most_error_prone_matrices_first():
    matrices = [_matrix("a", 400), _matrix("b", 400), _matrix("c", 200, "lm_head")]
    base = {"a": 4, "b": 4, "c": 8}
    plans = _plans(matrices, base, order=["b", "a"])
    assert plans[0][1] == base
    moved = [[n for n, bits in chosen.items() if bits == 8 and n != "c"] for _, chosen in plans]
    assert [sorted(m) for m in moved] == [[], ["b"], ["a", "b"]]
    sizes = [_predicted_bytes(matrices, chosen, 32, 10_000) for _, chosen in plans]
    assert sizes == sorted(sizes)
    # int4: half a byte per weight plus a float32 scale per 32 weights.
    assert _predicted_bytes(matrices, {"a": 4}, 32, 1000) == pytest.approx(
        1000 - 400 + 100 * 0.5 + 100 / 32 * 4
    )


def test_auto_records_its_plans_and_keeps_one(tiny_genai_dir: Path, tmp_path: Path):
    recipe = {
        "steps": [
            {
                "quantize": {
                    "mode": "llm-auto",
                    "method": "rtn",
                    "block_size": 16,
                    "max_size_ratio": 0.9,
                    "max_trials": 3,
                }
            }
        ],
        "evaluate": {"llm": FAST},
    }
    report = compress(tiny_genai_dir, recipe, out_dir=tmp_path)
    trials = report.llm.trials
    assert 1 <= len(trials) <= 3
    assert sum(t.kept for t in trials) == 1
    kept = next(t for t in trials if t.kept)
    assert report.llm.result.size_bytes == kept.size_bytes
    assert [t.size_ratio for t in trials] == sorted(t.size_ratio for t in trials)
    assert any("llm-auto tried" in note for note in report.notes)
    # The search windows are apart from the evaluation windows the report measures on.
    assert report.llm.calibration_windows >= 1
