from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import model_builders
from compress_engine import EngineError, ModelInfo, inspect_onnx


def test_it_describes_the_tiny_cnn(cnn_path: Path) -> None:
    info = inspect_onnx(cnn_path)

    assert isinstance(info, ModelInfo)
    assert info.opset == 17
    assert info.ir_version >= 7
    assert info.producer.startswith("pytorch")
    assert [(t.name, t.dtype, t.shape) for t in info.inputs] == [
        ("input", "float32", ["batch", 1, 8, 8])
    ]
    assert [(t.name, t.dtype, t.shape) for t in info.outputs] == [
        ("logits", "float32", ["batch", 10])
    ]
    torch_params = model_builders.torch_parameter_count(model_builders.build_tiny_cnn(seed=0))
    assert info.parameters == torch_params
    assert info.op_types["Conv"] == 2
    assert info.op_types["Gemm"] == 2
    assert info.nodes == sum(info.op_types.values())
    assert info.size_bytes == cnn_path.stat().st_size


def test_it_reports_a_fixed_batch(tmp_path: Path) -> None:
    path = model_builders.export_tiny_cnn(tmp_path / "fixed.onnx", dynamic_batch=False)

    assert inspect_onnx(path).inputs[0].shape == [1, 1, 8, 8]


def test_it_round_trips_model_info_through_json(cnn_path: Path) -> None:
    info = inspect_onnx(cnn_path)

    assert ModelInfo.model_validate_json(info.model_dump_json()) == info


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("empty", "empty"),
        ("garbage", "not a valid ONNX model"),
        ("text", "not a valid ONNX model"),
        ("truncated", "not a valid ONNX model"),
        ("pickle", "not a valid ONNX model.*Python pickle"),
    ],
)
def test_it_refuses_bad_files(tmp_path: Path, cnn_path: Path, kind: str, expected: str) -> None:
    path = model_builders.write_bad_model(tmp_path / f"{kind}.onnx", kind, source=cnn_path)  # type: ignore[arg-type]

    with pytest.raises(EngineError, match=expected):
        inspect_onnx(path)


def test_it_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        inspect_onnx(tmp_path / "nope.onnx")


def test_it_refuses_files_over_the_size_limit(cnn_path: Path) -> None:
    with pytest.raises(EngineError, match="larger than the limit"):
        inspect_onnx(cnn_path, max_bytes=1000)
    assert inspect_onnx(cnn_path, max_bytes=10_000_000).parameters > 0


def test_it_accepts_external_data_beside_the_model(tmp_path: Path, cnn_path: Path) -> None:
    path = model_builders.save_with_external_data(cnn_path, tmp_path / "ext.onnx")
    data = tmp_path / "ext.onnx.data"

    info = inspect_onnx(path)

    assert info.parameters == inspect_onnx(cnn_path).parameters
    assert info.size_bytes == path.stat().st_size + data.stat().st_size


def test_it_refuses_external_data_for_a_bare_onnx_upload(tmp_path: Path, cnn_path: Path) -> None:
    path = model_builders.save_with_external_data(cnn_path, tmp_path / "ext.onnx")

    with pytest.raises(EngineError, match="external data") as err:
        inspect_onnx(path, external_data=False)
    assert "Upload a .zip" in str(err.value)


def test_it_refuses_missing_external_data(tmp_path: Path, cnn_path: Path) -> None:
    path = model_builders.save_with_external_data(cnn_path, tmp_path / "ext.onnx")
    (tmp_path / "ext.onnx.data").unlink()

    with pytest.raises(EngineError, match=r"not there: ext\.onnx\.data") as err:
        inspect_onnx(path)
    assert "Upload a .zip" in str(err.value)


def test_it_refuses_external_data_outside_the_model_folder(tmp_path: Path, cnn_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.mkdir()
    path = model_builders.save_with_external_data(cnn_path, inner / "ext.onnx")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../ext.onnx.data"
    (inner / "ext.onnx.data").rename(tmp_path / "ext.onnx.data")
    onnx.save(model, str(path))

    with pytest.raises(EngineError, match="outside the model's folder"):
        inspect_onnx(path)


def _tiny_graph_model(**model_kwargs: object) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, **model_kwargs)  # type: ignore[arg-type]


def test_it_refuses_an_ir_version_newer_than_supported(tmp_path: Path) -> None:
    model = _tiny_graph_model(opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = onnx.IR_VERSION + 1
    onnx.save(model, str(tmp_path / "m.onnx"))

    with pytest.raises(EngineError, match=r"IR version .* newer than ONNX Runtime on this server"):
        inspect_onnx(tmp_path / "m.onnx")


def test_it_refuses_an_opset_newer_than_supported(tmp_path: Path) -> None:
    newest = onnx.defs.onnx_opset_version()
    model = _tiny_graph_model(opset_imports=[helper.make_opsetid("", newest + 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))

    with pytest.raises(EngineError, match=f"opset {newest + 1}, newer"):
        inspect_onnx(tmp_path / "m.onnx")


def test_it_refuses_an_ancient_opset(tmp_path: Path) -> None:
    model = _tiny_graph_model(opset_imports=[helper.make_opsetid("", 5)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))

    with pytest.raises(EngineError, match="older than the oldest supported"):
        inspect_onnx(tmp_path / "m.onnx")


def test_it_refuses_a_graph_the_checker_rejects(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["undefined_tensor"], ["y"], name="relu")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))

    with pytest.raises(EngineError, match="failed ONNX validation"):
        inspect_onnx(tmp_path / "m.onnx")


def test_it_counts_constant_node_tensors_as_parameters(tmp_path: Path) -> None:
    import numpy as np

    graph = helper.make_graph(
        [
            helper.make_node(
                "Constant",
                [],
                ["c"],
                name="const",
                value=numpy_helper.from_array(np.ones((2, 3), np.float32)),
            ),
            helper.make_node("Add", ["x", "c"], ["s"], name="add"),
            helper.make_node("Mul", ["s", "w"], ["y"], name="mul"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        initializer=[numpy_helper.from_array(np.ones((3,), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "m.onnx"))

    info = inspect_onnx(tmp_path / "m.onnx")

    assert info.parameters == 6 + 3
    assert info.inputs[0].shape == ["n", 3]


def test_importing_the_engine_loads_no_heavy_framework(engine_env: dict[str, str]) -> None:
    # The web app imports configs/inspect at request time; torch/onnxruntime/onnx must wait.
    code = (
        "import sys, compress_engine, compress_engine.configs, compress_engine.passes;"
        "compress_engine.list_passes();"
        "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=engine_env
    ).stdout
    assert out.strip() == "[]"


def _matmul_model(ir_version: int) -> onnx.ModelProto:
    import numpy as np

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ir_version
    )


def test_the_ir_limit_is_what_the_installed_onnx_runtime_loads(tmp_path: Path) -> None:
    import onnxruntime as ort

    from compress_engine.inspect import MAX_RUNTIME_IR_VERSION

    newest, too_new = tmp_path / "newest.onnx", tmp_path / "too_new.onnx"
    onnx.save(_matmul_model(MAX_RUNTIME_IR_VERSION), newest)
    onnx.save(_matmul_model(MAX_RUNTIME_IR_VERSION + 1), too_new)
    ort.InferenceSession(str(newest), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="IR version"):
        ort.InferenceSession(str(too_new), providers=["CPUExecutionProvider"])


def test_a_model_newer_than_onnx_runtime_loads_is_refused_at_inspection(tmp_path: Path) -> None:
    from compress_engine.inspect import MAX_RUNTIME_IR_VERSION

    path = tmp_path / "too_new.onnx"
    onnx.save(_matmul_model(MAX_RUNTIME_IR_VERSION + 1), path)
    with pytest.raises(EngineError, match=r"IR version 14, newer than ONNX Runtime"):
        inspect_onnx(path)
