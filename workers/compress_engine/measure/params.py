"""Parameter and node counts of an ONNX graph, subgraphs (If/Loop/Scan bodies) included."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# onnx.AttributeProto.GRAPH / GRAPHS / TENSOR / SPARSE_TENSOR; literal so this module needs no onnx.
_GRAPH, _GRAPHS, _TENSOR, _SPARSE_TENSOR, _FLOATS, _INTS = 5, 10, 4, 11, 6, 7


def iter_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """The graph and every nested subgraph, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == _GRAPH:
                yield from iter_graphs(attr.g)
            elif attr.type == _GRAPHS:
                for sub in attr.graphs:
                    yield from iter_graphs(sub)


def iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for g in iter_graphs(graph):
        yield from g.node


def _numel(dims: object) -> int:
    return math.prod(int(d) for d in dims)  # type: ignore[attr-defined]


def count_parameters(model: onnx.ModelProto) -> int:
    """Element count of all initializers plus tensors held by Constant nodes.

    Counts elements, not bytes, so a float and an int8 copy of a weight count the same; uses
    only the dims, so it works without loading external data.
    """
    total = 0
    for g in iter_graphs(model.graph):
        total += sum(_numel(t.dims) for t in g.initializer)
        # A sparse initializer stores only its non-zero values.
        total += sum(_numel(t.values.dims) for t in g.sparse_initializer)
        for node in g.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
                continue
            for attr in node.attribute:
                if attr.type == _TENSOR:
                    total += _numel(attr.t.dims)
                elif attr.type == _SPARSE_TENSOR:
                    total += _numel(attr.sparse_tensor.values.dims)
                elif attr.type == _FLOATS:
                    total += len(attr.floats)
                elif attr.type == _INTS:
                    total += len(attr.ints)
                elif attr.name in ("value_float", "value_int"):
                    total += 1
    return total


def op_type_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type (domain-qualified for non-standard domains), most common first."""
    counts = Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        for n in iter_nodes(model.graph)
    )
    return dict(counts.most_common())


def topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes with every producer before its consumers (stable otherwise)."""
    known = {v.name for v in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:  # a cycle or an outer-scope input: keep the rest in file order
            return ordered + pending
        for node in ready:
            known.update(node.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    return ordered
