"""Shapes for the intermediate values that ONNX's own shape inference loses.

onnx2torch picks some modules by the rank of their input as shape inference records it
(MaxPool1d/2d/3d, BatchNorm1d/2d/3d, the axes GlobalAveragePool averages over). A Reshape
whose target is computed from a dynamic dim (`x.view(x.shape[0], -1, 1, 1)` in a
squeeze-excite block, exported with a dynamic batch) leaves every value after it without a
shape, and onnx2torch then reads the rank as 0: GlobalAveragePool averages over the channels
too, and the rebuilt module computes something else than the model.

ONNX Runtime's symbolic shape inference follows such computed shapes (it keeps `batch`,
`height`, ... as symbols), so its shapes are written into the graph for exactly the values
ONNX's inference left without one; onnx2torch keeps shapes it is given.
"""

from __future__ import annotations

from typing import Any


def complete_value_shapes(proto: Any) -> list[str]:
    """Add value_info for the values whose shape ONNX's inference leaves unknown, where ONNX
    Runtime's symbolic inference knows it; returns their names."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # onnx2torch will say what it cannot read
        return []
    graph = inferred.graph
    known = {v.name for v in [*graph.value_info, *graph.input, *graph.output] if _has_shape(v)} | {
        t.name for t in graph.initializer
    }
    produced = [out for node in graph.node for out in node.output if out]
    missing = [name for name in produced if name not in known]
    if not missing:
        return []
    symbolic = _symbolic(proto)
    added = []
    for name in missing:
        value = symbolic.get(name)
        if value is not None:
            proto.graph.value_info.append(value)
            added.append(name)
    return added


def _symbolic(proto: Any) -> dict[str, Any]:
    """Value name -> ValueInfoProto with a shape, by ONNX Runtime's symbolic inference."""
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        inferred = SymbolicShapeInference.infer_shapes(copy, auto_merge=True)
    except Exception:  # an op it has no rule for: leave the shapes to onnx2torch
        return {}
    if inferred is None:
        return {}
    return {v.name: v for v in inferred.graph.value_info if _has_shape(v)}


def _has_shape(value: Any) -> bool:
    return value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape")
