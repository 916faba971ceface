from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compress_engine.errors import EngineError
from compress_engine.llm.weight_plan import layer_precisions, plan, select, weight_matrices

EMBED, UP = "/model/embed_tokens/Gather", "/model/layers.0/mlp/up/MatMul"
BLOCK_NAMES = ("attn/qkv_proj", "attn/o_proj", "mlp/gate_proj", "mlp/up_proj", "mlp/down_proj")


@pytest.fixture(scope="module")
def matrices(tiny_genai_dir: Path):
    model = onnx.load(str(tiny_genai_dir / "model.onnx"), load_external_data=False)
    return weight_matrices(model)


def untied_model() -> onnx.ModelProto:
    """Embedding Gather on its own table, one block MatMul, an lm_head writing `logits`."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((40, 32)).astype(np.float32), "embed.weight"),
        numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "l0.weight"),
        numpy_helper.from_array(rng.standard_normal((32, 40)).astype(np.float32), "head.weight"),
    ]
    nodes = [
        helper.make_node("Gather", ["embed.weight", "ids"], ["h0"], name=EMBED),
        helper.make_node("MatMul", ["h0", "l0.weight"], ["h1"], name=UP),
        helper.make_node("MatMul", ["h1", "head.weight"], ["logits"], name="/out/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "untied",
        [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, [1, "s"])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [1, "s", 40])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_it_lists_every_weight_matrix_of_a_genai_graph(matrices):
    names = [m.name for m in matrices]
    expected = [f"/model/layers.{b}/{n}/MatMul" for b in (0, 1) for n in BLOCK_NAMES]
    assert names == [*expected, "/lm_head/MatMul", "/model/embed_tokens/Gather"]
    by_name = {m.name: m for m in matrices}
    qkv = by_name["/model/layers.1/attn/qkv_proj/MatMul"]
    assert (qkv.role, qkv.block, qkv.op_type) == ("attention", 1, "MatMul")
    assert qkv.shape == (64, 128) and qkv.bytes == 64 * 128 * 4
    assert by_name["/model/layers.0/mlp/down_proj/MatMul"].role == "mlp"
    head, embed = by_name["/lm_head/MatMul"], by_name["/model/embed_tokens/Gather"]
    assert (head.role, head.block, head.shape) == ("lm_head", None, (64, 512))
    # Tied: the embedding reads Transpose(lm_head weight), owns no bytes, points at the head.
    assert (embed.role, embed.shape, embed.bytes) == ("embedding", (512, 64), 0)
    assert embed.weight == head.weight
    assert embed.tied_to == head.name and head.tied_to == embed.name


def test_an_untied_embedding_owns_its_table_and_the_logits_matmul_is_the_lm_head():
    found = {m.name: m for m in weight_matrices(untied_model())}
    embed = found[EMBED]
    assert (embed.role, embed.bytes, embed.tied_to) == ("embedding", 40 * 32 * 4, None)
    assert found["/out/MatMul"].role == "lm_head"
    assert found[UP].block == 0


def test_selectors_pick_roles_blocks_and_globs(matrices):
    assert select(matrices, "lm_head") == ["/lm_head/MatMul"]
    assert select(matrices, "embedding") == ["/model/embed_tokens/Gather"]
    assert select(matrices, "first_block") == [f"/model/layers.0/{n}/MatMul" for n in BLOCK_NAMES]
    assert select(matrices, "last_block") == select(matrices, "block:1")
    assert len(select(matrices, "attention")) == 4 and len(select(matrices, "mlp")) == 6
    assert select(matrices, "/model/layers.0/mlp/*") == [
        f"/model/layers.0/{n}/MatMul" for n in BLOCK_NAMES[2:]
    ]
    assert select(matrices, "/model/layers.1/attn/o_proj/MatMul") == [
        "/model/layers.1/attn/o_proj/MatMul"
    ]


def test_a_plan_applies_int8_then_float_and_ties_embedding_to_lm_head(matrices):
    chosen = plan(matrices, bits=4, int8=["lm_head", "block:0"], float_=["/model/layers.0/mlp/up*"])
    assert chosen["/lm_head/MatMul"] == 8
    assert chosen["/model/embed_tokens/Gather"] == 8  # one tensor with the lm_head
    assert chosen["/model/layers.0/attn/qkv_proj/MatMul"] == 8
    assert chosen["/model/layers.0/mlp/up_proj/MatMul"] is None
    assert chosen["/model/layers.1/mlp/up_proj/MatMul"] == 4
    # Asking for the embedding in float keeps the tied lm_head in float too.
    tied = plan(matrices, bits=8, int8=[], float_=["embedding"])
    assert tied["/lm_head/MatMul"] is None and tied["/model/embed_tokens/Gather"] is None
    assert set(plan(matrices, bits=8, int8=["mlp"], float_=[]).values()) == {8}
    rows = layer_precisions(matrices, chosen)
    assert [r.name for r in rows] == [m.name for m in matrices]
    head = next(r for r in rows if r.role == "lm_head")
    assert (head.bits, head.block) == (8, None)


@pytest.mark.parametrize("selector", ["block:7", "decoder", "/model/layers.9/*"])
def test_a_selector_that_matches_nothing_names_the_valid_ones(matrices, selector):
    with pytest.raises(EngineError) as caught:
        plan(matrices, bits=4, int8=[selector], float_=[])
    message = str(caught.value)
    assert repr(selector) in message
    for word in ("embedding", "lm_head", "first_block", "last_block", "attention", "mlp"):
        assert word in message
    assert "block:0 .. block:1" in message


def test_only_4_and_8_bits_are_planned(matrices):
    with pytest.raises(EngineError, match="4 or 8 bits"):
        plan(matrices, bits=3, int8=[], float_=[])
