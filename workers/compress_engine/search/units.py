"""Fallback units: what "keep this layer in float" has to cover to remove its error.

Excluding one weighted node from static int8 keeps its weights in float, but not the tensors
around it: the bias Add, activation, pooling or reshape after it are quantized on their own,
so its output is still rounded to 8 bits, and a layer whose output range is the problem
(logits before a softmax, a sigmoid map, features fed to a recurrent layer) gains nothing.
A unit is therefore the weighted node plus the chain of single-input nodes after it, up to
the next weighted node, merge (two activations in), recurrent layer, branch or graph output;
the same chain is quantized alone when the unit's sensitivity is measured, so the ranking
and the fallback remove the same error.

Nodes that quantize activations without weights (a residual Add, Concat, Mul of a gate,
Sigmoid, Softmax) start units of their own: keeping them in float costs no bytes.

Reads the graph with `onnx` only; knows nothing of ONNX Runtime.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Consumers that read only a tensor's shape: they neither quantize it nor end a chain.
_SHAPE_ONLY = frozenset({"Shape", "Size"})
# Recurrent layers stay float in static int8; a chain stops at their input.
_RECURRENT = frozenset({"GRU", "LSTM", "RNN"})
# Ops that only move, select or clip values: quantized when their input is, never on their
# own, so they never start a unit.
PASS_THROUGH = frozenset(
    {
        "Relu",
        "Clip",
        "Reshape",
        "Transpose",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "MaxPool",
        "Slice",
        "Identity",
        "Dropout",
    }
)
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass(frozen=True)
class FallbackUnit:
    """A node to keep in float together with the nodes after it that carry its output."""

    name: str  # the node that starts the unit (a weighted layer, or a merge/activation)
    op_type: str
    members: tuple[str, ...]  # every node kept in float with it, `name` first
    weight_elements: int  # constant weights (2+ dims) the unit stores as int8 when quantized
    position: int  # index of `name` in the graph (topological order)
    feeds_output: bool  # its chain ends in a graph output (a head)

    @property
    def fallback_bytes(self) -> int:
        """Bytes the file grows by when the unit stays float: 4-byte instead of 1-byte
        weights (biases are 32-bit either way)."""
        return 3 * self.weight_elements


def fallback_units(
    model: onnx.ModelProto,
    *,
    weighted_types: Collection[str],
    quantized_types: Collection[str] = (),
    excluded: Collection[str] = (),
    chains: bool = True,
) -> list[FallbackUnit]:
    """Units in graph order: one per named node of `weighted_types` with a constant weight,
    then (with `chains`) one per node of `quantized_types` that quantizes on its own and is
    in no unit yet. `excluded` nodes (already float) start no unit and end every chain.
    chains=False: every unit is its weighted node alone (dynamic int8 quantizes nothing
    around a layer)."""
    graph = model.graph
    constants = {t.name: int(_numel(t.dims)) for t in graph.initializer}
    dims = {t.name: len(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            constants.setdefault(node.output[0], 1)
            dims.setdefault(node.output[0], 0)
    types = _elem_types(model)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name:
                consumers[name].append(node)
    outputs = {o.name for o in graph.output}
    skip = set(excluded)
    weighted = {
        n.name
        for n in graph.node
        if n.name
        and n.op_type in weighted_types
        and n.name not in skip
        and any(i in constants for i in n.input[1:])
    }

    def activation(tensor: str) -> bool:
        return bool(tensor) and tensor not in constants and types.get(tensor, 1) in _FLOAT_TYPES

    def chain(start: onnx.NodeProto) -> list[onnx.NodeProto]:
        members = [start]
        node = start
        while True:
            outs = [o for o in node.output if activation(o)]
            if len(outs) != 1 or outs[0] in outputs:
                return members
            readers = [c for c in consumers[outs[0]] if c.op_type not in _SHAPE_ONLY]
            if len(readers) != 1:
                return members
            nxt = readers[0]
            inputs = [i for i in nxt.input if activation(i)]
            if (
                not nxt.name
                or nxt.name in weighted
                or nxt.name in skip
                or nxt.op_type in _RECURRENT
                or len(inputs) != 1
            ):
                return members
            members.append(nxt)
            node = nxt

    def unit(node: onnx.NodeProto, position: int, grow: bool) -> FallbackUnit:
        members = chain(node) if grow else [node]
        last = members[-1]
        heads = any(o in outputs for o in last.output)
        weights = sum(
            constants[i] for m in members for i in m.input if i in constants and dims[i] >= 2
        )
        return FallbackUnit(
            name=node.name,
            op_type=node.op_type,
            members=tuple(m.name for m in members),
            weight_elements=weights,
            position=position,
            feeds_output=heads,
        )

    units = [unit(n, i, chains) for i, n in enumerate(graph.node) if n.name in weighted]
    if chains:
        taken = {m for u in units for m in u.members}
        own = set(quantized_types) - set(weighted_types) - PASS_THROUGH
        for i, n in enumerate(graph.node):
            starts = n.name and n.name not in taken and n.name not in skip and n.op_type in own
            if starts and any(activation(x) for x in n.input):
                u = unit(n, i, True)
                units.append(u)
                taken.update(u.members)
        units.sort(key=lambda u: u.position)
    return units


def pick_units(units: Sequence[FallbackUnit], limit: int) -> list[FallbackUnit]:
    """At most `limit` units, in graph order: the first layer and the heads (the layers
    that are most often sensitive, and usually small) always, then the most weights."""
    if len(units) <= limit:
        return list(units)
    weighted = [u for u in units if u.weight_elements > 0]
    must = {u.name for u in units if u.feeds_output}
    if weighted:
        must.add(weighted[0].name)
    chosen = [u for u in units if u.name in must][:limit]
    rest = sorted(
        (u for u in units if u.name not in must), key=lambda u: (-u.weight_elements, u.position)
    )
    chosen += rest[: limit - len(chosen)]
    return sorted(chosen, key=lambda u: u.position)


def _numel(dims: Sequence[int]) -> int:
    total = 1
    for d in dims:
        total *= int(d)
    return total


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type per tensor name, where the graph records it (value_info after shape
    inference, inputs, outputs); unknown tensors are treated as float."""
    graph = model.graph
    found: dict[str, int] = {}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type"):
            found[vi.name] = vi.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type in _SHAPE_ONLY:  # shapes are int64 even without inference
            for o in node.output:
                found.setdefault(o, 7)
    return found
