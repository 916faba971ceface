"""The graph side of SmoothQuant-style smoothing (see passes/smoothing): which MatMul/Gemm
inputs can be smoothed, their activation ranges, and the exact-in-float rewrite.

X @ W == (X / s) @ (diag(s) W) for any positive s per input channel j of a constant W; with
s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) an activation's outlier channels move into the
weight. X / s is one inserted Div per activation (shared by every smoothed reader of it; then
s uses the max over all their weights), or, when every reader of a LayerNormalization's output
is smoothed, folded into its scale and bias. Div, not Mul: ONNX Runtime's static quantizer
quantizes Mul and would round X, outliers and all, before the division; it leaves Div in
float (`read_float_inputs` undoes its rewiring of the Div's input).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.onnx_files import has_external_data

if TYPE_CHECKING:
    import onnx

# The factor per channel stays within this range (float32 keeps ~7 digits either way).
MIN_SCALE, MAX_SCALE = 1e-4, 1e4
_FLOAT = 1  # onnx.TensorProto.FLOAT
DIV_PREFIX = "SmoothQuant_"


@dataclass
class Group:
    """The smoothable readers of one activation tensor, and their constant weights."""

    tensor: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    # (initializer name, axis of W that indexes X's channels: 0, or 1 for Gemm transB=1)
    weights: list[tuple[str, int]] = field(default_factory=list)
    channels: int = 0


def find_groups(model: onnx.ModelProto, op_types: set[str], skip: set[str]) -> list[Group]:
    """MatMul/Gemm nodes (of `op_types`, not in `skip`) reading an activation X and a 2-D
    float32 weight initializer that nothing else reads, grouped by X."""
    import onnx

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    reads: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node.input:
            reads[name] += 1
    graph_io = {v.name for v in [*graph.input, *graph.output]}
    types = _elem_types(model)
    groups: dict[str, Group] = {}
    for node in graph.node:
        if node.op_type not in op_types or node.name in skip or node.domain not in ("", "ai.onnx"):
            continue
        if len(node.input) < 2 or node.input[0] in inits or node.input[0] in ("",):
            continue
        x, w = node.input[0], node.input[1]
        weight = inits.get(w)
        if weight is None or len(weight.dims) != 2 or weight.data_type != _FLOAT:
            continue
        if reads[w] != 1 or w in graph_io or types.get(x, _FLOAT) != _FLOAT:
            continue
        axis = 0
        if node.op_type == "Gemm":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("transA", 0):
                continue
            axis = 1 if attrs.get("transB", 0) else 0
        group = groups.setdefault(x, Group(x, channels=int(weight.dims[axis])))
        if int(weight.dims[axis]) != group.channels:
            continue
        group.nodes.append(node)
        group.weights.append((w, axis))
    return list(groups.values())


def activation_maxima(
    model_path: Path, tensors: Sequence[str], feeds: Sequence[dict], work: Path
) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor over `feeds`, from a copy of the float
    model with the tensors as extra outputs (one batch's activations in memory at a time)."""
    import onnx

    from compress_engine.device import physical_cores
    from compress_engine.measure.runtime import create_session

    probe = onnx.load(str(model_path), load_external_data=False)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, _FLOAT, None) for n in tensors if n not in present
    )
    # Weights in a data file stay there: the probe (its graph only) is written beside them.
    external = has_external_data(model_path)
    path = model_path.with_name("smoothing-probe.onnx") if external else work / "probe.onnx"
    onnx.save(probe, str(path))
    session = create_session(path, providers=["CPUExecutionProvider"], threads=physical_cores())
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            arr = np.abs(np.asarray(value, dtype=np.float32))
            m = arr.reshape(-1, arr.shape[-1]).max(axis=0) if arr.size else None
            if m is not None:
                maxima[name] = m if name not in maxima else np.maximum(maxima[name], m)
    del session
    path.unlink()
    return maxima


def outlier_ratio(maxima: np.ndarray) -> float:
    """The largest channel max over the median one (1.0 for an all-zero tensor)."""
    median = float(np.median(maxima))
    top = float(maxima.max()) if maxima.size else 0.0
    return top / median if median > 0 else (math.inf if top > 0 else 1.0)


def smoothing_scales(x_max: np.ndarray, w_max: np.ndarray, alpha: float) -> np.ndarray:
    """s_j = max|X_j|^alpha / max|W_j|^(1 - alpha), 1 where either is zero, clamped."""
    x = x_max.astype(np.float64)
    w = w_max.astype(np.float64)
    ok = (x > 0) & (w > 0) & np.isfinite(x) & np.isfinite(w)
    s = np.ones_like(x)
    s[ok] = x[ok] ** alpha / w[ok] ** (1.0 - alpha)
    return np.clip(s, MIN_SCALE, MAX_SCALE).astype(np.float32)


def apply_smoothing(
    model: onnx.ModelProto, groups: Sequence[Group], maxima: dict[str, np.ndarray], alpha: float
) -> tuple[int, int]:
    """Smooth every group with activation maxima, in place: weights scaled, X divided by s
    (folded into a LayerNormalization where all of its output's readers are smoothed).
    Returns (groups smoothed, of them folded)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    weights = {name: numpy_helper.to_array(inits[name]) for g in groups for name, _ in g.weights}
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    outputs = {o.name for o in graph.output}
    smoothed = folded = 0
    for i, group in enumerate(groups):
        x_max = maxima.get(group.tensor)
        if x_max is None or x_max.shape != (group.channels,):
            continue
        w_max = np.max([np.abs(weights[w]).max(axis=1 - axis) for w, axis in group.weights], axis=0)
        s = smoothing_scales(x_max, w_max, alpha)
        for w, axis in group.weights:
            shape = (-1, 1) if axis == 0 else (1, -1)
            scaled = (weights[w] * s.reshape(shape)).astype(np.float32)
            inits[w].CopyFrom(numpy_helper.from_array(scaled, w))
        ln = producers.get(group.tensor)
        everyone = {id(n) for n in readers[group.tensor]} == {id(n) for n in group.nodes}
        if everyone and group.tensor not in outputs and _fold(ln, s, inits, readers):
            folded += 1
        else:
            _insert_div(model, group, s, f"{DIV_PREFIX}{i}")
        smoothed += 1
    return smoothed, folded


def _fold(
    ln: onnx.NodeProto | None,
    s: np.ndarray,
    inits: dict[str, onnx.TensorProto],
    readers: dict[str, list[onnx.NodeProto]],
) -> bool:
    """Divide a LayerNormalization's (last-axis) scale and bias by s; False if it is not one."""
    import onnx
    from onnx import numpy_helper

    if ln is None or ln.op_type != "LayerNormalization" or ln.domain not in ("", "ai.onnx"):
        return False
    axis = next((onnx.helper.get_attribute_value(a) for a in ln.attribute if a.name == "axis"), -1)
    params = [p for p in ln.input[1:3] if p]
    ok = axis == -1 and all(
        p in inits and len(readers[p]) == 1 and tuple(inits[p].dims) == s.shape for p in params
    )
    if not ok:  # (its Mean/InvStdDev outputs do not depend on scale and bias)
        return False
    for p in params:
        value = numpy_helper.to_array(inits[p]) / s
        inits[p].CopyFrom(numpy_helper.from_array(value.astype(np.float32), p))
    return True


def _insert_div(model: onnx.ModelProto, group: Group, s: np.ndarray, name: str) -> None:
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    out, scale = f"{group.tensor}/{name}", f"{name}/scale"
    graph.initializer.append(numpy_helper.from_array(s, scale))
    div = onnx.helper.make_node("Div", [group.tensor, scale], [out], name=name)
    for node in group.nodes:
        node.input[0] = out
    first = min(i for i, n in enumerate(graph.node) if any(n is m for m in group.nodes))
    graph.node.insert(first, div)
    known = next((v for v in graph.value_info if v.name == group.tensor), None)
    if known is not None:  # the quantizers read shapes and types from value_info
        info = graph.value_info.add()
        info.CopyFrom(known)
        info.name = out


def read_float_inputs(path: Path) -> int:
    """Point each smoothing Div of a QDQ model back at its float input: ONNX Runtime's static
    quantizer rewires every reader of a quantized tensor to its DequantizeLinear, which would
    round X, outliers and all, before the division. Returns the Divs changed."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    producers = {o: n for n in model.graph.node for o in n.output}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Div" or not node.name.startswith(DIV_PREFIX):
            continue
        dq = producers.get(node.input[0])
        q = (
            producers.get(dq.input[0])
            if dq is not None and dq.op_type == "DequantizeLinear"
            else None
        )
        if q is not None and q.op_type == "QuantizeLinear":
            node.input[0] = q.input[0]
            changed += 1
    if changed:  # external weights stay where they are: only the graph is rewritten
        onnx.save(model, str(path))
    return changed


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    values = [*graph.value_info, *graph.input, *graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in values if v.type.HasField("tensor_type")}
