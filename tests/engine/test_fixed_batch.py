"""A model exported with a fixed batch dimension trains at the recipe's batch_size, as the same
model exported with a dynamic batch does, and keeps its fixed shapes in the result (issue 15).

The CNN is the digits teacher of test_distill.py, exported twice from the same weights: once
with a dynamic batch, once with batch 1 and its Flatten written as the Reshape to [1, -1] that
the torch exporter emits for `x.view(x.size(0), -1)` at a fixed batch (onnx2torch rebuilds
that Reshape as one that breaks at any other batch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import model_builders
from compress_engine import Report, compress
from compress_engine.torch_side.convert import check_round_trip, load_torch

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}
TEACHER_SAMPLES = 1000
BATCH = 32
STEPS = [{"prune": {}}, {"distill": {"epochs": 3, "lr": 3e-3, "batch_size": BATCH}}]
# Both runs start from the same weights and draw the same batches in the same order, so
# they differ by float rounding only (another graph for the flatten, ONNX Runtime scoring
# batches of 1 against batches of 32). That can flip a near-tie prediction or two out of the
# ~640 scored digits: 0.01 is six of them, far under what batch-1 training moved before.
SAME_WITHIN = 0.01


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_param if d.HasField("dim_param") else d.dim_value
        for d in value.type.tensor_type.shape.dim
    ]


def _flatten_as_fixed_reshape(path: Path) -> Path:
    """Replace the model's Flatten(axis=1) by Reshape(x, [1, -1]): the same function at batch 1."""
    proto = onnx.load(str(path))
    (index,) = [i for i, n in enumerate(proto.graph.node) if n.op_type == "Flatten"]
    flatten = proto.graph.node[index]
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1, -1]), "flat_shape"))
    reshape = helper.make_node(
        "Reshape", [flatten.input[0], "flat_shape"], list(flatten.output), name=flatten.name
    )
    proto.graph.node.remove(flatten)
    proto.graph.node.insert(index, reshape)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    x, y = model_builders.digits_dataset()
    folder = tmp_path_factory.mktemp("fixed-batch")
    np.savez(folder / "digits.npz", x=x[TEACHER_SAMPLES:], y=y[TEACHER_SAMPLES:])
    teach = (x[:TEACHER_SAMPLES], y[:TEACHER_SAMPLES])
    dynamic = model_builders.export_digits_teacher(folder / "dynamic.onnx", *teach)
    fixed = model_builders.export_digits_teacher(folder / "fixed.onnx", *teach, dynamic_batch=False)
    return {
        "dynamic": dynamic,
        "fixed": _flatten_as_fixed_reshape(fixed),
        "data": folder / "digits.npz",
    }


@pytest.fixture(scope="module")
def runs(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("dynamic", "fixed"):
        out_dir = tmp_path_factory.mktemp(kind)
        recipe = {"steps": STEPS, "evaluate": FAST}
        report = compress(models[kind], recipe, models["data"], out_dir=out_dir)
        out[kind] = (report, out_dir / report.artifacts[0].name)
    return out


def _report(runs: dict[str, Any], kind: str) -> Report:
    return runs[kind][0]


def test_the_fixed_export_really_is_fixed(models: dict[str, Path]) -> None:
    proto = onnx.load(str(models["fixed"]))

    assert _dims(proto.graph.input[0]) == [1, 1, 8, 8]
    assert "Reshape" in [n.op_type for n in proto.graph.node]


@pytest.mark.parametrize("kind", ["dynamic", "fixed"])
def test_it_takes_as_many_optimiser_steps_as_the_recipe_batch_size_gives(
    runs: dict[str, Any], kind: str
) -> None:
    (training,) = _report(runs, kind).training

    per_epoch = math.ceil(training.train_samples / BATCH)
    assert training.optimizer_steps == per_epoch * training.epochs_run
    assert [p.optimizer_steps for p in training.history] == [
        per_epoch * p.epoch for p in training.history
    ]


def test_both_exports_train_alike(runs: dict[str, Any]) -> None:
    dynamic, fixed = _report(runs, "dynamic"), _report(runs, "fixed")
    assert dynamic.accuracy is not None and fixed.accuracy is not None

    assert fixed.accuracy.original_top1 == pytest.approx(dynamic.accuracy.original_top1, abs=1e-9)
    assert fixed.accuracy.result_top1 > 0.85
    assert fixed.accuracy.result_top1 == pytest.approx(
        dynamic.accuracy.result_top1, abs=SAME_WITHIN
    )
    (fixed_training,) = fixed.training
    (dynamic_training,) = dynamic.training
    assert fixed_training.epochs_run == dynamic_training.epochs_run


def test_the_result_keeps_the_fixed_batch(runs: dict[str, Any]) -> None:
    fixed, dynamic = onnx.load(str(runs["fixed"][1])), onnx.load(str(runs["dynamic"][1]))

    assert _dims(fixed.graph.input[0]) == [1, 1, 8, 8]
    assert _dims(fixed.graph.output[0]) == [1, 10]
    assert _dims(dynamic.graph.input[0])[0] == "batch"


def test_the_report_says_how_the_fixed_batch_was_trained(runs: dict[str, Any]) -> None:
    notes = _report(runs, "fixed").notes

    assert any(
        "fixed at 1: distillation ran at batch_size 32 on a copy with a free batch" in n
        for n in notes
    )
    assert not any("batch dimension is fixed" in n for n in _report(runs, "dynamic").notes)


# --- a fixed batch that cannot be freed ------------------------------------------------------


def _write_constant_concat_model(path: Path) -> Path:
    """x [1, 4] -> Gemm -> [1, 4], concatenated with a constant [1, 2] row: at batch 2 the
    Concat fails, as a fixed-batch ViT's class token does."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
            helper.make_node("Concat", ["h", "token"], ["y"], name="join", axis=1),
        ],
        "constant-concat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        initializer=[
            numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w"),
            numpy_helper.from_array(np.zeros((1, 2), np.float32), "token"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_batch_that_cannot_be_freed_is_kept_and_said(tmp_path: Path) -> None:
    path = _write_constant_concat_model(tmp_path / "concat.onnx")
    model = load_torch(path)

    check_round_trip(model, path)

    assert (model.fixed_batch, model.train_batch, model.batch_free) == (1, 1, False)
    assert model.batch_problem is not None
    assert model.batch_problem.startswith("it fails at batch 2")


def test_distillation_falls_back_to_the_fixed_batch_and_says_why(tmp_path: Path) -> None:
    path = _write_constant_concat_model(tmp_path / "concat.onnx")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(1).standard_normal((60, 4), np.float32))
    steps = [{"distill": {"epochs": 1, "batch_size": 16}}]

    report = compress(
        path, {"steps": steps, "evaluate": FAST}, tmp_path / "x.npz", out_dir=tmp_path / "out"
    )

    (training,) = report.training
    assert training.optimizer_steps == training.train_samples  # one sample per step
    assert any(
        "cannot run at other batch sizes (it fails at batch 2" in n and "batch_size 16" in n
        for n in report.notes
    )


def test_the_rebuilt_module_runs_any_batch_as_onnx_runtime_runs_each_sample(
    models: dict[str, Path],
) -> None:
    import onnxruntime as ort
    import torch

    model = load_torch(models["fixed"])
    check_round_trip(model, models["fixed"])
    x = np.random.default_rng(5).standard_normal((5, 1, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(models["fixed"]), providers=["CPUExecutionProvider"])

    with torch.no_grad():
        got = model.module(torch.from_numpy(x)).numpy()

    want = np.concatenate([session.run(None, {"input": x[i : i + 1]})[0] for i in range(5)])
    assert (model.fixed_batch, model.train_batch) == (1, None)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
