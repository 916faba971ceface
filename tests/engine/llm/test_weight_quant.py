from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compress_engine.errors import EngineError
from compress_engine.llm.embedding_quant import quantize_embedding
from compress_engine.llm.generate import answer
from compress_engine.llm.nncf_weights import window_feeds
from compress_engine.llm.weight_plan import plan, weight_matrices
from compress_engine.llm.weight_quant import decoder_config, model_bytes, quantize_folder

IDS = np.arange(3, 43, dtype=np.int64)[None]


@pytest.fixture(scope="module")
def matrices(tiny_genai_dir: Path):
    return weight_matrices(onnx.load(str(tiny_genai_dir / "model.onnx"), load_external_data=False))


def logits(folder: Path) -> np.ndarray:
    import onnxruntime as ort

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    feed = window_feeds(model, decoder_config(folder), IDS)[0]
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["logits"], feed)[0]


def graph_of(folder: Path) -> onnx.GraphProto:
    return onnx.load(str(folder / "model.onnx"), load_external_data=False).graph


def attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_int4_gives_a_complete_matmulnbits_folder_that_generates(
    tiny_genai_dir, matrices, tmp_path
):
    chosen = plan(matrices, bits=4, int8=[], float_=[])
    out = quantize_folder(
        tiny_genai_dir,
        tmp_path / "q",
        plan=chosen,
        block_size=32,
        symmetric=True,
        accuracy_level=4,
    )
    graph = graph_of(out.folder)
    ops = Counter(n.op_type for n in graph.node)
    assert ops["MatMulNBits"] == 11 and ops["GatherBlockQuantized"] == 1
    assert ops["MatMul"] == 0 and ops["Transpose"] == 0 and ops["DequantizeLinear"] == 0
    assert {t.name for t in graph.initializer}.isdisjoint({m.weight for m in matrices})
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            assert attrs(node)["bits"] == 4 and attrs(node)["accuracy_level"] == 4
    assert out.form == "MatMulNBits" and out.method == "rtn" and out.seconds > 0
    assert [layer.bits for layer in out.layers] == [4] * 12
    # Every side file copied, genai_config.json unchanged, data in model.onnx.data.
    for name in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out.folder / name).read_bytes() == (tiny_genai_dir / name).read_bytes()
    assert (out.folder / "model.onnx.data").stat().st_size > 0
    assert out.size_bytes == model_bytes(out.folder) < model_bytes(tiny_genai_dir) / 3
    [(text, tokens, tok_s)] = answer(
        out.folder, ["The print function"], max_new_tokens=6, threads=1
    )
    assert tokens == 6 and tok_s > 0 and isinstance(text, str)


def test_int8_layers_get_8_bits_and_the_tied_embedding_follows_the_lm_head(
    tiny_genai_dir, matrices, tmp_path
):
    chosen = plan(matrices, bits=4, int8=["lm_head", "first_block"], float_=[])
    out = quantize_folder(
        tiny_genai_dir,
        tmp_path / "q",
        plan=chosen,
        block_size=16,
        symmetric=False,
        accuracy_level=None,
    )
    bits = {
        n.name: attrs(n)["bits"]
        for n in graph_of(out.folder).node
        if n.op_type in ("MatMulNBits", "GatherBlockQuantized")
    }
    assert bits["/lm_head/MatMul_Q8"] == 8
    assert bits["/model/embed_tokens/GatherBlockQuantized"] == 8
    assert bits["/model/layers.0/mlp/down_proj/MatMul_Q8"] == 8
    assert bits["/model/layers.1/mlp/down_proj/MatMul_Q4"] == 4
    for node in graph_of(out.folder).node:
        if node.op_type == "MatMulNBits":
            assert "accuracy_level" not in attrs(node)
            assert len(node.input) == 4  # asymmetric: zero points
    reported = {layer.name: layer.bits for layer in out.layers}
    assert reported["/model/embed_tokens/Gather"] == 8 and reported["/lm_head/MatMul"] == 8
    assert reported["/model/layers.1/attn/qkv_proj/MatMul"] == 4


def test_quantized_logits_stay_close_to_the_float_model(tiny_genai_dir, matrices, tmp_path):
    reference = logits(tiny_genai_dir)
    for bits, symmetric in ((8, True), (4, False)):
        out = quantize_folder(
            tiny_genai_dir,
            tmp_path / f"q{bits}",
            plan=plan(matrices, bits=bits, int8=[], float_=[]),
            block_size=16,
            symmetric=symmetric,
            accuracy_level=None,
        )
        got = logits(out.folder)
        relative = np.abs(got - reference).max() / np.abs(reference).max()
        correlation = np.corrcoef(got.ravel(), reference.ravel())[0, 1]
        # A wrong nibble order or block layout scrambles weights: correlation would collapse.
        assert relative < (0.02 if bits == 8 else 0.25)
        assert correlation > (0.999 if bits == 8 else 0.97)


def test_float_layers_stay_matmul_and_keep_the_tied_table(tiny_genai_dir, matrices, tmp_path):
    chosen = plan(matrices, bits=4, int8=[], float_=["lm_head"])
    out = quantize_folder(
        tiny_genai_dir,
        tmp_path / "q",
        plan=chosen,
        block_size=32,
        symmetric=True,
        accuracy_level=4,
    )
    ops = Counter(n.op_type for n in graph_of(out.folder).node)
    assert ops["MatMulNBits"] == 10 and ops["MatMul"] == 1
    assert ops["Transpose"] == 1 and ops["GatherBlockQuantized"] == 0
    reported = {layer.name: layer.bits for layer in out.layers}
    assert reported["/lm_head/MatMul"] is None and reported["/model/embed_tokens/Gather"] is None
    assert logits(out.folder).shape == (1, IDS.shape[1], 512)


@pytest.mark.parametrize(("bits", "hidden"), [(4, 64), (8, 64), (4, 48)])
def test_an_untied_embedding_becomes_gather_block_quantized(bits, hidden):
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    table = rng.standard_normal((40, hidden)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["out"], name="/model/embed_tokens/Gather")],
        "embed",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, 5])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 5, hidden])],
        initializer=[numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    [embedding] = weight_matrices(model)
    assert quantize_embedding(model, embedding, bits, block_size=32, symmetric=True)
    assert model.graph.node[0].op_type == "GatherBlockQuantized"
    assert "table" not in {t.name for t in model.graph.initializer}
    ids = np.array([[0, 7, 39, 7, 3]], dtype=np.int64)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(["out"], {"ids": ids})[0]
    step = np.abs(table).max() / (7 if bits == 4 else 127)  # one quantization step, at most
    assert got.shape == (1, 5, hidden)
    assert np.abs(got - table[ids]).max() <= step


def test_it_refuses_bad_requests(tiny_genai_dir, matrices, tmp_path):
    chosen = plan(matrices, bits=4, int8=[], float_=[])
    common = {"block_size": 32, "symmetric": True, "accuracy_level": None}
    with pytest.raises(EngineError, match="unknown weight method"):
        quantize_folder(tiny_genai_dir, tmp_path / "a", plan=chosen, method="hqq", **common)
    with pytest.raises(EngineError, match="calibration"):
        quantize_folder(tiny_genai_dir, tmp_path / "b", plan=chosen, method="awq", **common)
    with pytest.raises(EngineError, match="lacks"):
        quantize_folder(tiny_genai_dir, tmp_path / "c", plan={"/nope/MatMul": 4}, **common)
    with pytest.raises(EngineError, match="4 or 8 bits"):
        quantize_folder(tiny_genai_dir, tmp_path / "d", plan={"/lm_head/MatMul": 2}, **common)
