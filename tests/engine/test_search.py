"""Sensitivity ranking and accuracy-aware fallback, with real ONNX Runtime quantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress_engine.search import fallback_search, rank_single_layer_error
from compress_engine.search.sensitivity import relative_error

NODES = ["mm1", "mm2", "mm3"]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> Path:
    """Three MatMul layers; mm2 has one outlier weight, so int8 with a per-tensor scale
    rounds its other weights coarsely: it is the most sensitive layer by construction."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((32, 64)).astype(np.float32) * 0.2
    w2 = rng.standard_normal((64, 64)).astype(np.float32) * 0.2
    w2[0, 0] = 40.0
    w3 = rng.standard_normal((64, 10)).astype(np.float32) * 0.2
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "w2"], ["h2"], name="mm2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("MatMul", ["a2", "w3"], ["y"], name="mm3"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w, n) for w, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))
        ],
    )
    path = tmp_path_factory.mktemp("search") / "mlp.onnx"
    # onnx 1.23 defaults to IR version 14, newer than ONNX Runtime 1.31 loads (13).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.save(model, path)
    return path


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
