"""ONNX -> trainable torch module (onnx2torch) -> ONNX: the round trip every torch-side step
relies on, checked against ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import model_builders
from compress_engine import EngineError, compress
from compress_engine.torch_side.convert import (
    TorchModel,
    check_round_trip,
    export_onnx,
    load_torch,
    module_name,
)

EXACT = 1e-5


@dataclass
class RoundTrip:
    original: Path
    result: Path
    model: TorchModel


def _round_trip(original: Path) -> RoundTrip:
    model = load_torch(original)
    check_round_trip(model, original)
    result = original.with_name(original.stem + ".torch.onnx")
    export_onnx(model, result)
    return RoundTrip(original, result, model)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_param if d.HasField("dim_param") else d.dim_value
        for d in value_info.type.tensor_type.shape.dim
    ]


def _opset(proto: onnx.ModelProto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@pytest.fixture(
    scope="module",
    params=[("cnn", 13), ("cnn", 17), ("mlp", 13), ("mlp", 17)],
    ids=lambda p: f"{p[0]}-opset{p[1]}",
)
def round_trip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    kind, opset = request.param
    folder = tmp_path_factory.mktemp(f"{kind}{opset}")
    if kind == "cnn":  # Conv+BN+ReLU+MaxPool+Linear
        original = model_builders.export_conv_bn_cnn(folder / "cnn.onnx", opset=opset)
    else:
        original = model_builders.export_tiny_mlp(folder / "mlp.onnx", opset=opset, hidden=32)
    return _round_trip(original)


# --- round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 5])
def test_it_computes_what_onnx_runtime_computes(round_trip: RoundTrip, batch: int) -> None:
    original, result = _session(round_trip.original), _session(round_trip.result)
    shape = [batch, *round_trip.model.info.inputs[0].shape[1:]]
    x = np.random.default_rng([batch, 3]).standard_normal(shape).astype(np.float32)

    want = original.run(None, {"input": x})[0]
    got = result.run(None, {"input": x})[0]

    assert got.shape == (batch, 10)
    np.testing.assert_allclose(got, want, rtol=0, atol=EXACT)


def test_it_keeps_names_opset_and_the_dynamic_batch(round_trip: RoundTrip) -> None:
    original, result = onnx.load(round_trip.original), onnx.load(round_trip.result)

    assert [i.name for i in result.graph.input] == ["input"]
    assert [o.name for o in result.graph.output] == ["logits"]
    assert _opset(result) == _opset(original)
    assert _dims(result.graph.input[0]) == _dims(original.graph.input[0])
    assert _dims(result.graph.input[0])[0] == "batch"
    assert _dims(result.graph.output[0]) == ["batch", 10]


def test_it_restores_the_original_node_names(round_trip: RoundTrip) -> None:
    original, result = onnx.load(round_trip.original), onnx.load(round_trip.result)
    weighted = [n.name for n in original.graph.node if n.op_type in ("Conv", "Gemm")]

    names = {n.name for n in result.graph.node}

    assert weighted
    assert set(weighted) <= names
    assert {n.name for n in original.graph.node} <= names


def test_it_maps_module_names_to_node_names(round_trip: RoundTrip) -> None:
    modules = dict(round_trip.model.module.named_modules())
    original = onnx.load(round_trip.original)

    assert set(round_trip.model.node_names.values()) == {n.name for n in original.graph.node}
    assert set(round_trip.model.node_names) <= set(modules)


def test_it_records_the_round_trip_check(round_trip: RoundTrip) -> None:
    check = check_round_trip(round_trip.model, round_trip.original, seed=3)

    assert check.max_abs_diff <= check.tolerance
    assert check.samples == 2
    assert check.opset == _opset(onnx.load(round_trip.original))


def test_module_name_follows_onnx2torch() -> None:
    assert module_name("/features/0/Conv", "Conv") == "features/0/Conv"
    assert module_name("features.0.conv", "Conv") == "features/0/conv"
    assert module_name("", "Relu") == "Relu"
    assert module_name("frob", "Frobnicate", "com.example") == "com.example/frob"


# --- other graphs ------------------------------------------------------------------------


def test_it_round_trips_a_model_with_two_inputs(tmp_path: Path) -> None:
    trip = _round_trip(model_builders.export_two_input_mlp(tmp_path / "two.onnx"))
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.standard_normal((5, 16)).astype(np.float32),
        "b": rng.standard_normal((5, 8)).astype(np.float32),
    }

    result = onnx.load(trip.result)
    got = _session(trip.result).run(None, feed)[0]

    assert trip.model.input_names == ["a", "b"]
    assert [i.name for i in result.graph.input] == ["a", "b"]
    assert [o.name for o in result.graph.output] == ["logits"]
    np.testing.assert_allclose(got, _session(trip.original).run(None, feed)[0], rtol=0, atol=EXACT)


def _write_named_model(path: Path) -> Path:
    """Conv -> Relu -> Flatten -> Gemm with dotted node names, as other exporters write them;
    the Gemm weight comes from a Constant node, the batch dim is dynamic but unnamed."""
    rng = np.random.default_rng(0)
    fc = rng.standard_normal((10, 4 * 8 * 8)).astype(np.float32) * 0.1
    nodes = [
        helper.make_node(
            "Constant", [], ["fc_w"], name="fc_weight", value=numpy_helper.from_array(fc, "v")
        ),
        helper.make_node(
            "Conv", ["input", "conv_w", "conv_b"], ["c"], name="features.0.conv", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c"], ["r"], name="features.1.act"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w"], ["logits"], name="classifier.fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "named",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
        initializer=[
            numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv_w"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv_b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_it_restores_dotted_names_and_keeps_an_unnamed_batch_dim_dynamic(
    tmp_path: Path,
) -> None:
    trip = _round_trip(_write_named_model(tmp_path / "named.onnx"))
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)

    result = onnx.load(trip.result)
    got = _session(trip.result).run(None, {"input": x})[0]

    names = [n.name for n in result.graph.node]
    assert {"features.0.conv", "features.1.act", "classifier.fc"} <= set(names)
    assert trip.model.node_names["features/0/conv"] == "features.0.conv"
    # The Constant weight became a parameter of a real Linear layer (prunable, trainable).
    assert isinstance(dict(trip.model.module.named_modules())["classifier/fc"], torch.nn.Linear)
    assert isinstance(_dims(result.graph.input[0])[0], str)
    assert _opset(result) == 13
    np.testing.assert_allclose(
        got, _session(trip.original).run(None, {"input": x})[0], rtol=0, atol=EXACT
    )


def test_it_keeps_a_fixed_batch_fixed(tmp_path: Path) -> None:
    path = model_builders.export_conv_bn_cnn(tmp_path / "fixed.onnx", dynamic_batch=False)
    trip = _round_trip(path)

    result = onnx.load(trip.result)

    assert trip.model.fixed_batch == 1
    assert _dims(result.graph.input[0]) == [1, 1, 8, 8]
    assert _dims(result.graph.output[0]) == [1, 10]


# --- refusals ----------------------------------------------------------------------------


def _write_hardmax_model(path: Path) -> Path:
    """Gemm -> Hardmax: valid ONNX that ONNX Runtime runs and onnx2torch 1.5 cannot convert."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
            helper.make_node("Hardmax", ["h"], ["y"], name="pick", axis=-1),
        ],
        "hardmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_it_names_the_op_onnx2torch_does_not_support(tmp_path: Path) -> None:
    path = _write_hardmax_model(tmp_path / "hardmax.onnx")
    _session(path).run(None, {"x": np.ones((2, 4), np.float32)})  # a valid model

    with pytest.raises(EngineError, match=r"does not support the ONNX op Hardmax \(opset 13\)"):
        load_torch(path)


def test_compress_refuses_a_prune_step_on_an_unsupported_op(tmp_path: Path) -> None:
    path = _write_hardmax_model(tmp_path / "hardmax.onnx")

    with pytest.raises(EngineError, match="Hardmax"):
        compress(
            path,
            {"steps": [{"prune": {}}], "evaluate": {"latency_runs": 1, "batch_sizes": []}},
            out_dir=tmp_path / "out",
        )

    assert not list((tmp_path / "out").glob("*"))


def test_it_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    path = model_builders.write_bad_model(tmp_path / "bad.onnx", "garbage")

    with pytest.raises(EngineError, match="not a valid ONNX model"):
        load_torch(path)


def test_the_check_fails_when_the_module_computes_something_else(tmp_path: Path) -> None:
    path = model_builders.export_conv_bn_cnn(tmp_path / "cnn.onnx")
    model = load_torch(path)
    conv = next(m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] += 1.0

    with pytest.raises(EngineError, match="does not compute the same outputs as ONNX Runtime"):
        check_round_trip(model, path)
