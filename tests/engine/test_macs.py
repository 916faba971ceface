"""MAC and non-zero parameter counts against values computed by hand."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress_engine.measure.macs import count_macs
from compress_engine.measure.sparsity import count_nonzero_parameters


def _init(name: str, shape: tuple[int, ...], fill: float | None = None) -> onnx.TensorProto:
    rng = np.random.default_rng(0)
    array = rng.standard_normal(shape).astype(np.float32) if fill is None else np.full(shape, fill)
    return numpy_helper.from_array(array.astype(np.float32), name)


def _model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=4, name="dw"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w3"], ["g"], transB=1, name="fc"),
        helper.make_node("Reshape", ["g", "shape"], ["g3"], name="reshape"),
        helper.make_node("MatMul", ["g3", "w4"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            _init("w1", (4, 3, 3, 3)),
            _init("w2", (4, 1, 3, 3)),
            _init("w3", (10, 256)),
            numpy_helper.from_array(np.array([-1, 5, 2], dtype=np.int64), "shape"),
            _init("w4", (2, 7), fill=0.0),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_it_counts_conv_depthwise_gemm_and_matmul_by_hand():
    result = count_macs(_model(), {"x": [2, 3, 8, 8]})
    conv = 2 * 4 * 8 * 8 * (3 * 3 * 3)  # out elements x (C_in/group * kH * kW)
    depthwise = 2 * 4 * 8 * 8 * (1 * 3 * 3)
    gemm = 2 * 10 * 256
    matmul = 2 * 5 * 7 * 2  # out [2, 5, 7], K = 2
    assert result.by_op_type == {"Conv": conv + depthwise, "Gemm": gemm, "MatMul": matmul}
    assert result.total == conv + depthwise + gemm + matmul
    # Relu has arithmetic the count does not cover; it is listed, not hidden.
    assert result.uncounted_op_types == {"Relu": 1}


def test_it_scales_with_the_batch_size():
    one = count_macs(_model(), {"x": [1, 3, 8, 8]}).total
    four = count_macs(_model(), {"x": [4, 3, 8, 8]}).total
    assert four == 4 * one


def test_it_gives_no_total_when_shapes_do_not_fit():
    assert count_macs(_model(), {"x": [1, 3, 8]}).total is None


def test_it_counts_dynamic_int8_the_same_as_float(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    from model_builders import export_tiny_mlp

    original = export_tiny_mlp(tmp_path / "mlp.onnx")
    quantize_dynamic(original, tmp_path / "q.onnx")
    shapes = {"input": [3, 64]}  # export_tiny_mlp's default in_features
    before = count_macs(onnx.load(original), shapes)
    after = count_macs(onnx.load(tmp_path / "q.onnx"), shapes)
    assert before.total and after.total == before.total


def test_it_counts_only_non_zero_parameters():
    # w4 is all zeros (14 elements); the int64 shape tensor has 3 non-zero values.
    model = _model()
    total = 4 * 3 * 3 * 3 + 4 * 9 + 10 * 256 + 3
    assert count_nonzero_parameters(model) == total


def test_it_counts_graphs_whose_nodes_are_out_of_order_with_stale_shapes():
    # The float16 converter appends its Cast nodes after their consumers and writes rank-less
    # value_info entries; ONNX Runtime runs such graphs, so MACs must still be counted.
    model = _model()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    model.graph.value_info.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, None))
    assert (
        count_macs(model, {"x": [1, 3, 8, 8]}).total
        == count_macs(_model(), {"x": [1, 3, 8, 8]}).total
    )
