"""Which weight matrices a language model has, and the precision each one gets.

`weight_matrices` lists every MatMul whose weight is an initializer plus the token embedding
(a Gather on a weight table), as the onnxruntime-genai builder names them:
/model/embed_tokens/Gather, /model/layers.N/attn/qkv_proj/MatMul, /model/layers.N/mlp/down_proj/
MatMul, /lm_head/MatMul. `plan` turns a default bit width plus int8 / float selectors into one
precision per matrix.

With tied embeddings (SmolLM2, most small models) the builder feeds the embedding Gather from
Transpose(lm_head weight): the two are one tensor, so they always get the same precision (the
more precise of the two asked for), and the embedding owns no bytes of its own.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Literal

import onnx

from compress_engine.errors import EngineError
from compress_engine.report_llm import LayerPrecision

Role = Literal["embedding", "lm_head", "attention", "mlp", "other"]
SELECTOR_WORDS = ("embedding", "lm_head", "first_block", "last_block", "attention", "mlp")
_BLOCK = re.compile(r"(?:^|[/.])(?:layers|layer|blocks|h)\.(\d+)(?:[/.]|$)")
_BLOCK_SELECTOR = re.compile(r"block:(\d+)")
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


@dataclass(frozen=True)
class WeightMatrix:
    """One quantizable weight matrix of the graph."""

    name: str  # node name
    op_type: str  # "MatMul" or "Gather"
    role: Role
    block: int | None  # transformer block index parsed from the name
    shape: tuple[int, ...]  # as stored: [K, N] for a MatMul, [vocab, hidden] for the embedding
    bytes: int  # float bytes this matrix owns (0 for an embedding tied to the lm_head)
    weight: str  # initializer name
    tied_to: str | None = None  # node sharing this weight (embedding <-> lm_head)


def weight_matrices(model: onnx.ModelProto) -> list[WeightMatrix]:
    """Every MatMul with a float initializer weight, and the token embedding, in graph order.

    Reads only the initializers' headers, so a model loaded without external data works too.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    found: list[WeightMatrix] = []
    matmul_by_weight: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and _is_float(inits, node.input[1]):
            init = inits[node.input[1]]
            role = _matmul_role(node, outputs)
            found.append(_matrix(node, role, init, node.input[1]))
            matmul_by_weight[node.input[1]] = node.name
    for node in graph.node:
        if node.op_type != "Gather":
            continue
        weight, tied = _gather_weight(node, inits, producers)
        if weight is None:
            continue
        matrix = _matrix(node, "embedding", inits[weight], weight)
        if tied:
            matrix = _tied(matrix, matmul_by_weight.get(weight))
        found.append(matrix)
    return _link_ties(found)


def _is_float(inits: dict[str, onnx.TensorProto], name: str) -> bool:
    init = inits.get(name)
    return init is not None and init.data_type in _FLOAT_TYPES and len(init.dims) == 2


def _matmul_role(node: onnx.NodeProto, graph_outputs: set[str]) -> Role:
    name = node.name.lower()
    if "lm_head" in name or node.output[0] in graph_outputs:
        return "lm_head"
    if any(key in name for key in ("/attn/", "self_attn", "attention")):
        return "attention"
    if any(key in name for key in ("/mlp/", "feed_forward", "/ffn/")):
        return "mlp"
    return "other"


def _gather_weight(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto]
) -> tuple[str | None, bool]:
    """The embedding table a Gather reads: an initializer, or Transpose(initializer) when tied."""
    data = node.input[0]
    if _is_float(inits, data):
        return data, False
    source = producers.get(data)
    if source is not None and source.op_type == "Transpose" and _is_float(inits, source.input[0]):
        return source.input[0], True
    return None, False


def _matrix(node: onnx.NodeProto, role: Role, init: onnx.TensorProto, weight: str) -> WeightMatrix:
    shape = tuple(int(d) for d in init.dims)
    item = 4 if init.data_type == onnx.TensorProto.FLOAT else 2
    size = item
    for dim in shape:
        size *= dim
    match = _BLOCK.search(node.name)
    block = int(match.group(1)) if match else None
    return WeightMatrix(node.name, node.op_type, role, block, shape, size, weight)


def _tied(matrix: WeightMatrix, partner: str | None) -> WeightMatrix:
    rows, cols = matrix.shape  # the lm_head's [hidden, vocab], read through a Transpose
    return WeightMatrix(
        matrix.name,
        matrix.op_type,
        matrix.role,
        matrix.block,
        (cols, rows),
        0,
        matrix.weight,
        tied_to=partner,
    )


def _link_ties(found: list[WeightMatrix]) -> list[WeightMatrix]:
    """Point the lm_head back at the embedding that reads its weight."""
    tied = {m.tied_to: m.name for m in found if m.tied_to}
    return [
        WeightMatrix(m.name, m.op_type, m.role, m.block, m.shape, m.bytes, m.weight, tied[m.name])
        if m.name in tied
        else m
        for m in found
    ]


def plan(
    matrices: list[WeightMatrix], *, bits: int, int8: list[str], float_: list[str]
) -> dict[str, int | None]:
    """Bits per matrix (None = kept in float): `bits` everywhere, then int8 selectors at 8 bits,
    then float selectors in float. Tied matrices take the more precise of their two choices.

    Raises EngineError for a selector that matches no matrix, naming the valid ones.
    """
    if bits not in (4, 8):
        raise EngineError(f"weight-only quantization stores 4 or 8 bits, not {bits}.")
    chosen: dict[str, int | None] = {m.name: bits for m in matrices}
    for selector in int8:
        for name in select(matrices, selector):
            chosen[name] = 8 if chosen[name] is not None else None
    for selector in float_:
        for name in select(matrices, selector):
            chosen[name] = None
    for m in matrices:
        if m.tied_to and m.tied_to in chosen:
            both = _more_precise(chosen[m.name], chosen[m.tied_to])
            chosen[m.name] = chosen[m.tied_to] = both
    return chosen


def _more_precise(a: int | None, b: int | None) -> int | None:
    if a is None or b is None:
        return None
    return max(a, b)


def select(matrices: list[WeightMatrix], selector: str) -> list[str]:
    """Names of the matrices one selector picks; EngineError when it picks none."""
    blocks = sorted({m.block for m in matrices if m.block is not None})
    picked: list[str]
    if selector in ("embedding", "lm_head", "attention", "mlp"):
        picked = [m.name for m in matrices if m.role == selector]
    elif selector in ("first_block", "last_block"):
        target = (blocks[0] if selector == "first_block" else blocks[-1]) if blocks else None
        picked = [m.name for m in matrices if target is not None and m.block == target]
    elif match := _BLOCK_SELECTOR.fullmatch(selector):
        picked = [m.name for m in matrices if m.block == int(match.group(1))]
    else:
        picked = [m.name for m in matrices if fnmatch.fnmatchcase(m.name, selector)]
    if not picked:
        span = f"block:0 .. block:{blocks[-1]}" if blocks else "no blocks found"
        raise EngineError(
            f"the layer selector {selector!r} matches no weight matrix of this model. Valid "
            f"selectors: {', '.join(SELECTOR_WORDS)}, block:N ({span}), or a node name or "
            f"glob such as '/model/layers.0/mlp/*' (e.g. {matrices[0].name if matrices else '-'})."
        )
    return picked


def layer_precisions(
    matrices: list[WeightMatrix], chosen: dict[str, int | None]
) -> list[LayerPrecision]:
    """The plan as report rows, one per matrix."""
    return [
        LayerPrecision(name=m.name, role=m.role, block=m.block, bits=chosen.get(m.name))
        for m in matrices
    ]
