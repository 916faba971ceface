"""The token embedding as GatherBlockQuantized (ONNX Runtime contrib op), in MatMulNBits' layout.

ONNX Runtime's own quantizer only turns a Gather on an initializer into int4/uint4
GatherBlockQuantized, and skips the tied embedding (its table is Transpose(lm_head weight), not an
initializer). Both cases are handled here the way the onnxruntime-genai builder does it: the table
is stored as MatMulNBits stores a [hidden, vocab] weight — uint8 rows of [vocab, hidden * bits / 8],
blocks along hidden, scales [vocab, blocks] — and read by GatherBlockQuantized(bits=4 or 8,
gather_axis=0, quantize_axis=1). A tied embedding reuses the lm_head's MatMulNBits tensors through
a Reshape, so the table is stored once.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compress_engine.llm.weight_plan import WeightMatrix


def quantize_embedding(
    model: onnx.ModelProto,
    embedding: WeightMatrix,
    bits: int,
    *,
    block_size: int,
    symmetric: bool,
) -> bool:
    """Rewrite the embedding Gather in place; False when it stays float.

    A tied embedding follows its lm_head: it is quantized exactly when the lm_head became
    MatMulNBits (with the lm_head's bits and blocks, whatever `bits` says).
    """
    graph = model.graph
    gather = _node(graph, embedding.name)
    if embedding.tied_to:
        lm_head = _nbits_reading(graph, embedding.weight)
        head_scales = _initializer(graph, lm_head.input[2]) if lm_head is not None else None
        if lm_head is None or head_scales is None or len(head_scales.dims) != 2:
            return False  # float lm_head, or scales not in the [N, blocks] shape Gather needs
        return _tie_to_lm_head(model, gather, lm_head)
    table = _initializer(graph, embedding.weight)
    if table is None:
        return False
    values = numpy_helper.to_array(table)
    weight_kn = np.ascontiguousarray(values.astype(np.float32).T)
    packed, scales, zero_points = _block_quant(weight_kn, bits, block_size, symmetric)
    vocab = packed.shape[0]
    prefix = embedding.weight
    data, scale, zero = prefix + f"_Q{bits}", prefix + "_scales", ""
    graph.initializer.extend(
        [
            numpy_helper.from_array(packed.reshape(vocab, -1), data),
            numpy_helper.from_array(scales.astype(values.dtype), scale),  # Gather's output type
        ]
    )
    if not symmetric:
        zero = prefix + "_zero_points"
        graph.initializer.append(numpy_helper.from_array(zero_points, zero))
    _replace_gather(model, gather, data, scale, zero, bits, block_size, weight_kn.shape[0])
    _drop_unused(graph, [embedding.weight])
    return True


def _block_quant(
    weight_kn: np.ndarray, bits: int, block_size: int, symmetric: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MatMulNBits packing of a [K, N] float matrix through ONNX Runtime's own C++ kernels."""
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        DefaultWeightOnlyQuantizer,
    )

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=symmetric, bits=bits)
    return DefaultWeightOnlyQuantizer(config).qbits_block_quant(weight_kn)


def _tie_to_lm_head(model: onnx.ModelProto, gather: onnx.NodeProto, nbits: onnx.NodeProto) -> bool:
    graph = model.graph
    attrs = {a.name: helper.get_attribute_value(a) for a in nbits.attribute}
    bits, block, k, n = attrs["bits"], attrs["block_size"], attrs["K"], attrs["N"]
    padded = -(-k // block) * block
    shape_name = f"{gather.name}/nbits_shape"
    graph.initializer.append(
        numpy_helper.from_array(np.array([n, padded * bits // 8], dtype=np.int64), shape_name)
    )
    rows = f"{gather.name}/nbits_rows"
    reshape = helper.make_node(
        "Reshape", [nbits.input[1], shape_name], [rows], name=f"{gather.name}/Reshape"
    )
    zero = nbits.input[3] if len(nbits.input) > 3 else ""
    transpose_weight = _transposed_source(graph, gather)
    _replace_gather(model, gather, rows, nbits.input[2], zero, bits, block, k, before=[reshape])
    _drop_unused(graph, [transpose_weight] if transpose_weight else [])
    return True


def _replace_gather(
    model: onnx.ModelProto,
    gather: onnx.NodeProto,
    data: str,
    scales: str,
    zero_points: str,
    bits: int,
    block_size: int,
    hidden: int,
    *,
    before: list[onnx.NodeProto] | None = None,
) -> None:
    """Put GatherBlockQuantized (and a Slice when blocks pad `hidden`) where the Gather was."""
    graph = model.graph
    padded = -(-hidden // block_size) * block_size
    out = gather.output[0] if padded == hidden else f"{gather.name}/padded"
    inputs = [data, gather.input[1], scales] + ([zero_points] if zero_points else [])
    nodes = list(before or [])
    nodes.append(
        helper.make_node(
            "GatherBlockQuantized",
            inputs,
            [out],
            name=gather.name + "BlockQuantized",
            domain="com.microsoft",
            bits=bits,
            block_size=block_size,
            gather_axis=0,
            quantize_axis=1,
        )
    )
    if padded != hidden:
        consts = {"starts": [0], "ends": [hidden], "axes": [-1]}
        for key, value in consts.items():
            name = f"{gather.name}/slice_{key}"
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
        names = [f"{gather.name}/slice_{key}" for key in consts]
        nodes.append(
            helper.make_node(
                "Slice", [out, *names], [gather.output[0]], name=gather.name + "/Slice"
            )
        )
    index = list(graph.node).index(gather)
    graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _transposed_source(graph: onnx.GraphProto, gather: onnx.NodeProto) -> str | None:
    """Remove the Transpose feeding a tied Gather when nothing else reads it; its input's name."""
    for node in graph.node:
        if node.op_type == "Transpose" and node.output[0] == gather.input[0]:
            readers = [n for n in graph.node if node.output[0] in n.input and n is not gather]
            if not readers:
                graph.node.remove(node)
            return node.input[0]
    return None


def _drop_unused(graph: onnx.GraphProto, names: list[str]) -> None:
    used = {name for node in graph.node for name in node.input}
    for init in [t for t in graph.initializer if t.name in names and t.name not in used]:
        graph.initializer.remove(init)


def _nbits_reading(graph: onnx.GraphProto, weight: str) -> onnx.NodeProto | None:
    """The MatMulNBits made from `weight` (ONNX Runtime names its B `<weight>_Q<bits>`)."""
    for node in graph.node:
        if node.op_type == "MatMulNBits" and node.input[1].startswith(weight + "_Q"):
            return node
    return None


def _node(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    node = _node_or_none(graph, name)
    if node is None:
        raise KeyError(name)
    return node


def _node_or_none(graph: onnx.GraphProto, name: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if n.name == name), None)


def _initializer(graph: onnx.GraphProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in graph.initializer if t.name == name), None)
