from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compress_engine.llm.generate import answer
from compress_engine.llm.nbits_repack import check_repack, repack_to_matmulnbits
from compress_engine.llm.text_data import bundled_prose, token_windows
from compress_engine.llm.weight_plan import plan, weight_matrices
from compress_engine.llm.weight_quant import quantize_folder

INT_TYPES = {
    "int4": (onnx.TensorProto.INT4, -8, 7),
    "uint4": (onnx.TensorProto.UINT4, 0, 15),
    "int8": (onnx.TensorProto.INT8, -128, 127),
    "uint8": (onnx.TensorProto.UINT8, 0, 255),
}


def dq_matmul_model(kind: str, *, k: int, n: int, block: int, zero_points: bool) -> onnx.ModelProto:
    """x [4, k] -> MatMul(x, DequantizeLinear(q [k, n], scales [k/block, n], zero points))."""
    dtype, low, high = INT_TYPES[kind]
    rng = np.random.default_rng(3)
    blocks = -(-k // block)
    q = rng.integers(low, high + 1, size=(k, n))
    inits = [
        helper.make_tensor("w_q", dtype, [k, n], q.flatten().tolist()),
        numpy_helper.from_array(rng.uniform(0.01, 0.1, (blocks, n)).astype(np.float32), "w_s"),
    ]
    inputs = ["w_q", "w_s"]
    if zero_points:
        zp = rng.integers(low, high + 1, size=(blocks, n))
        inits.append(helper.make_tensor("w_z", dtype, [blocks, n], zp.flatten().tolist()))
        inputs.append("w_z")
    nodes = [
        helper.make_node("DequantizeLinear", inputs, ["w"], name="dq", axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "pair",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, k])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, n])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusing
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(["y"], {"x": x})[0]


@pytest.mark.parametrize(
    ("kind", "k", "block", "zero_points"),
    [
        ("int4", 64, 32, False),
        ("int4", 64, 16, True),
        ("uint4", 64, 32, True),
        ("uint4", 64, 32, False),  # unsigned without zero points: MatMulNBits needs explicit zeros
        ("uint4", 80, 32, True),  # K not a multiple of the block
        ("int8", 64, 32, False),
        ("uint8", 96, 64, True),
    ],
)
def test_the_repacked_node_equals_dequantize_then_matmul(kind, k, block, zero_points):
    model = dq_matmul_model(kind, k=k, n=24, block=block, zero_points=zero_points)
    x = np.random.default_rng(0).standard_normal((4, k)).astype(np.float32)
    expected = run(model, x)
    inits = {t.name: t for t in model.graph.initializer}
    dq, mm = model.graph.node
    repack_to_matmulnbits(model, accuracy_level=4)  # runs check_repack on the pair too
    [node] = model.graph.node
    assert node.op_type == "MatMulNBits" and node.domain == "com.microsoft"
    got_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert got_attrs["K"] == k and got_attrs["N"] == 24 and got_attrs["block_size"] == block
    assert got_attrs["bits"] == int(kind[-1]) and got_attrs["accuracy_level"] == 4
    assert {t.name for t in model.graph.initializer}.isdisjoint(inits)
    # Measured again here, outside the run-time check: same product on fresh input.
    assert check_repack(dq, mm, node, inits, list(model.graph.initializer), seed=5) < 1e-5
    plain = helper.make_node("MatMulNBits", list(node.input), ["y"], domain="com.microsoft")
    plain.attribute.extend(a for a in node.attribute if a.name != "accuracy_level")
    model.graph.ClearField("node")
    model.graph.node.append(plain)
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-5, atol=1e-5)


def test_pairs_it_cannot_express_are_left_alone():
    model = dq_matmul_model("int8", k=64, n=24, block=32, zero_points=False)
    per_channel = model.graph.node[0]
    per_channel.ClearField("attribute")
    per_channel.attribute.append(helper.make_attribute("axis", 1))
    model.graph.initializer[1].CopyFrom(
        numpy_helper.from_array(np.full((24,), 0.05, np.float32), "w_s")
    )
    repack_to_matmulnbits(model)
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "MatMul"]


@pytest.fixture(scope="module")
def calibration(tiny_genai_dir: Path) -> np.ndarray:
    cut = token_windows(
        bundled_prose(),
        tiny_genai_dir / "tokenizer.json",
        window=48,
        calibration=4,
        evaluation=0,
        seed=0,
    )
    return cut.calibration


@pytest.mark.parametrize("method", ["awq"])
def test_data_aware_methods_deliver_matmulnbits_only(tiny_genai_dir, calibration, tmp_path, method):
    model = onnx.load(str(tiny_genai_dir / "model.onnx"), load_external_data=False)
    chosen = plan(weight_matrices(model), bits=4, int8=["lm_head"], float_=[])
    out = quantize_folder(
        tiny_genai_dir,
        tmp_path / method,
        plan=chosen,
        block_size=16,
        symmetric=True,
        accuracy_level=4,
        method=method,
        calibration=calibration,
    )
    graph = onnx.load(str(out.folder / "model.onnx"), load_external_data=False).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["MatMulNBits"] == 11 and ops["GatherBlockQuantized"] == 1
    assert ops["DequantizeLinear"] == 0 and ops["MatMul"] == 0
    assert out.form == "MatMulNBits" and out.method == method
    assert (
        out.notes and out.notes[0].startswith(f"{method}: ") and "10 block matrices" in out.notes[0]
    )
    bits = {
        n.name: helper.get_attribute_value(next(a for a in n.attribute if a.name == "bits"))
        for n in graph.node
        if n.op_type == "MatMulNBits"
    }
    assert bits.pop("/lm_head/MatMul_Q8") == 8 and set(bits.values()) == {4}
    [(_, tokens, _)] = answer(out.folder, ["The print function"], max_new_tokens=5, threads=1)
    assert tokens == 5
