"""Sensitivity ranking and accuracy-aware fallback, with real ONNX Runtime quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress_engine.search import fallback_search, rank_single_layer_error
from compress_engine.search.sensitivity import relative_error
from model_builders import export_outlier_mlp

NODES = ["mm1", "mm2", "mm3"]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    """mm2 is the most sensitive layer by construction (an outlier weight)."""
    return export_outlier_mlp(tmp_path_factory.mktemp("search") / "mlp.onnx")


@pytest.fixture(scope="module")
def inputs() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((8, 32)).astype(np.float32)} for _ in range(4)]


def _run(path: Path, inputs) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [session.run(None, feed)[0] for feed in inputs]


def _quantize(mlp: Path, out: Path, **kwargs) -> Path:
    from onnxruntime.quantization import quantize_dynamic

    quantize_dynamic(mlp, out, **kwargs)
    return out


def test_it_ranks_the_layer_with_an_outlier_weight_first(mlp, inputs, tmp_path):
    reference = _run(mlp, inputs)
    seen = []

    ranking = rank_single_layer_error(
        [(n, "MatMul") for n in NODES],
        quantize_only=lambda n: _quantize(mlp, tmp_path / f"{n}.onnx", nodes_to_quantize=[n]),
        run=lambda p: _run(p, inputs),
        reference=reference,
        progress=seen.append,
    )

    assert ranking[0].node == "mm2"
    errors = [layer.relative_error for layer in ranking]
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)
    assert seen[-1] == 1.0


def test_it_computes_relative_error_by_hand():
    assert relative_error([np.array([3.0, 4.0])], [np.array([3.0, 5.0])]) == pytest.approx(0.2)
    assert relative_error([np.zeros(2)], [np.zeros(2)]) == 0.0


def _cosine(reference, candidate) -> float:
    a = np.concatenate([r.ravel() for r in reference]).astype(np.float64)
    b = np.concatenate([c.ravel() for c in candidate]).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_it_keeps_sensitive_layers_in_float_until_the_budget_is_met(mlp, inputs, tmp_path):
    reference = _run(mlp, inputs)
    ranking = ["mm2", "mm1", "mm3"]
    fully_quantized = _cosine(reference, _run(_quantize(mlp, tmp_path / "q.onnx"), inputs))
    budget = (fully_quantized + 1.0) / 2  # stricter than plain int8 reaches

    outcome = fallback_search(
        ranking,
        build=lambda kept: _quantize(
            mlp, tmp_path / f"t{len(kept)}.onnx", nodes_to_exclude=list(kept)
        ),
        evaluate=lambda p: _cosine(reference, _run(p, inputs)),
        meets_budget=lambda metric: metric >= budget,
        max_trials=4,
    )

    assert outcome.met_budget
    assert not outcome.trials[0].meets_budget and outcome.trials[0].kept_in_float == ()
    assert outcome.best is outcome.trials[-1]
    assert outcome.best.kept_in_float == tuple(ranking[: outcome.best.index])
    assert outcome.best.metric >= budget


def test_it_keeps_the_best_trial_when_the_budget_cannot_be_met(mlp, inputs, tmp_path):
    reference = _run(mlp, inputs)
    outcome = fallback_search(
        ["mm2", "mm1"],
        build=lambda kept: _quantize(
            mlp, tmp_path / f"t{len(kept)}.onnx", nodes_to_exclude=list(kept)
        ),
        evaluate=lambda p: _cosine(reference, _run(p, inputs)),
        meets_budget=lambda metric: metric > 1.5,  # impossible for a cosine
        max_trials=10,
    )
    assert not outcome.met_budget
    assert len(outcome.trials) == 3  # nothing in float, then one, then two layers
    assert outcome.best.metric == max(t.metric for t in outcome.trials)
    assert outcome.best.model_path.exists()
