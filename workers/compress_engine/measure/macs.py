"""Multiply-accumulate counts from an ONNX graph with concrete input shapes.

Counted: convolutions and matrix products in float, QDQ, integer and n-bit forms, which
carry nearly all the arithmetic of CNNs, MLPs and transformers. Anything else (activations,
normalisation, attention kernels fused into one op) is not counted and is listed by op type,
so the figure never pretends to cover what it does not.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from compress_engine.measure.params import iter_nodes, topological_order

if TYPE_CHECKING:
    import onnx

# op type -> index of the weight input (its dims after the first are the per-output work)
_CONV_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
# op type -> index of the left operand, whose last dim is the reduction length K
_MATMUL_LEFT_INPUT = {
    "MatMul": 0,
    "MatMulInteger": 0,
    "QLinearMatMul": 0,
    "DynamicQuantizeMatMul": 0,
    "MatMulIntegerToFloat": 0,
    "FusedMatMul": 0,
}
# Ops with no arithmetic worth counting: not listed as "uncounted".
_FREE_OPS = frozenset(
    {
        "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Constant",
        "Shape", "Gather", "Concat", "Slice", "Cast", "QuantizeLinear", "DequantizeLinear",
        "DynamicQuantizeLinear", "Split", "Expand", "ConstantOfShape", "Range",
    }
)  # fmt: skip


@dataclass
class MacCount:
    total: int | None
    by_op_type: dict[str, int] = field(default_factory=dict)
    uncounted_op_types: dict[str, int] = field(default_factory=dict)


def count_macs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> MacCount:
    """MACs of one inference at `input_shapes`; total is None if shapes cannot be inferred."""
    shapes = _inferred_shapes(model, input_shapes)
    if shapes is None:
        return MacCount(total=None)
    by_type: Counter[str] = Counter()
    uncounted: Counter[str] = Counter()
    for node in iter_nodes(model.graph):
        macs = _node_macs(node, shapes)
        if macs is None:
            if node.op_type not in _FREE_OPS:
                uncounted[node.op_type] += 1
            continue
        by_type[node.op_type] += macs
    return MacCount(
        total=sum(by_type.values()),
        by_op_type=dict(by_type.most_common()),
        uncounted_op_types=dict(uncounted.most_common()),
    )


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, list[int]]) -> int | None:
    op = node.op_type
    out = shapes.get(node.output[0]) if node.output else None
    if out is None:
        return None
    if op in _CONV_WEIGHT_INPUT:
        weight = _input_shape(node, _CONV_WEIGHT_INPUT[op], shapes)
        if weight is None:
            return None
        if op == "ConvTranspose":
            x = _input_shape(node, 0, shapes)
            return None if x is None else math.prod(x) * math.prod(weight[1:])
        # Every output element is a dot product over (C_in / group) * kernel elements.
        return math.prod(out) * math.prod(weight[1:])
    if op in _MATMUL_LEFT_INPUT:
        left = _input_shape(node, _MATMUL_LEFT_INPUT[op], shapes)
        return None if not left else math.prod(out) * left[-1]
    if op == "Gemm":
        left = _input_shape(node, 0, shapes)
        if not left or len(left) != 2:
            return None
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return math.prod(out) * (left[0] if trans_a else left[1])
    if op == "MatMulNBits":
        k = next((a.i for a in node.attribute if a.name == "K"), None)
        return None if k is None else math.prod(out) * k
    return None


def _input_shape(node: onnx.NodeProto, index: int, shapes: Mapping[str, list[int]]):
    if index >= len(node.input) or not node.input[index]:
        return None
    return shapes.get(node.input[index])


def _inferred_shapes(
    model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, list[int]] | None:
    """Static shapes of every tensor whose shape ONNX shape inference can fully resolve."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    # Shapes written by earlier tools (e.g. the float16 converter's rank-less entries) would
    # stop inference from filling them in: infer every intermediate shape afresh.
    del fixed.graph.value_info[:]
    # ONNX shape inference walks nodes in file order; some tools (the float16 converter)
    # append their Cast nodes at the end, which ONNX Runtime accepts. Sort them first.
    ordered = topological_order(fixed.graph)
    del fixed.graph.node[:]
    fixed.graph.node.extend(ordered)
    for value in fixed.graph.input:
        if value.name not in input_shapes:
            continue
        dims = value.type.tensor_type.shape.dim
        wanted = list(input_shapes[value.name])
        if len(dims) != len(wanted):
            return None
        for dim, size in zip(dims, wanted, strict=True):
            dim.Clear()
            dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:  # unknown custom ops or invalid shapes: no MAC count, not a failure
        return None
    shapes: dict[str, list[int]] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.type.HasField("tensor_type") and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    for tensor in graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes
