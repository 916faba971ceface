"""Training at the recipe's batch size on a model exported with a fixed batch dimension.

Rebuilt as it is, a model exported with batch 1 trains one sample per optimiser step (150
steps become 8,100, and the learning rate meant for batch_size no longer fits). Before
onnx2torch rebuilds it, the graph's leading input and output dims become free, and every
Reshape whose constant target starts with the fixed batch, applied to a tensor that starts with
it too, copies its input's leading dim instead (0 in an ONNX Reshape target). At the fixed
batch this computes exactly what the original computes; `convert.check_round_trip` then
compares the module at twice the batch with ONNX Runtime run batch by batch, and training uses
the recipe's batch size only if they agree. The export keeps the original's fixed batch.
"""

from __future__ import annotations

from typing import Any

from compress_engine.inspect import ModelInfo, TensorInfo

FREE_BATCH = "modelpress_batch"


def fixed_batch_of(info: ModelInfo) -> int | None:
    """The model's fixed batch size (its first shaped input's leading dim), None if dynamic."""
    from compress_engine.measure.inputs import batch_dim_dynamic

    first = next((t for t in info.inputs if t.shape), None)
    if first is None or batch_dim_dynamic(first):
        return None
    return int(first.shape[0])  # type: ignore[arg-type]


def free_batch(proto: Any, info: ModelInfo, batch: int) -> str | None:
    """Free `proto`'s fixed batch dim in place; the reason it cannot be done, else None.

    `proto` is left untouched when a reason is returned.
    """
    unled = [t.name for t in [*info.inputs, *info.outputs] if not _leads_with(t, batch)]
    if unled:
        return (
            f"{', '.join(unled)} do{'es' if len(unled) == 1 else ''} not start with the batch "
            f"dimension {batch} that the other inputs and outputs share"
        )
    _rewrite_reshapes(proto, batch)
    inputs = {t.name for t in info.inputs}
    for value in [*(i for i in proto.graph.input if i.name in inputs), *proto.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = FREE_BATCH
    # Intermediate shapes recorded at the fixed batch would contradict the free one;
    # onnx2torch infers them again.
    del proto.graph.value_info[:]
    return None


def _leads_with(t: TensorInfo, batch: int) -> bool:
    return bool(t.shape) and t.shape[0] == batch


def _rewrite_reshapes(proto: Any, batch: int) -> int:
    """Reshape targets [batch, ...] of tensors [batch, ...] become [0, ...] (copy dim 0)."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    try:
        leads = _leading_dims(onnx.shape_inference.infer_shapes(proto))
    except Exception:  # e.g. an op without a shape function: rewrite nothing
        return 0
    rewritten = 0
    for node in proto.graph.node:
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        allowzero = next((a.i for a in node.attribute if a.name == "allowzero"), 0)
        target = inits.get(node.input[1])
        if allowzero or target is None or leads.get(node.input[0]) != batch:
            continue
        shape = numpy_helper.to_array(target)
        if shape.ndim != 1 or not len(shape) or int(shape[0]) != batch:
            continue
        shape = shape.copy()
        shape[0] = 0
        name = f"{target.name}/{FREE_BATCH}"
        if name not in inits:
            inits[name] = numpy_helper.from_array(shape, name)
            proto.graph.initializer.append(inits[name])
        node.input[1] = name
        rewritten += 1
    return rewritten


def _leading_dims(inferred: Any) -> dict[str, int]:
    """Tensor name -> its leading dim where shape inference (at the fixed batch) knows it."""
    out: dict[str, int] = {}
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            out[value.name] = dims[0].dim_value
    for init in graph.initializer:
        if init.dims:
            out[init.name] = init.dims[0]
    return out
