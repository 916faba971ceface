"""Static int8 (QDQ): keep in float an output Concat that joins inputs of very different ranges.

In QDQ every tensor has one scale. A Concat copies its inputs unchanged into one tensor, so
they all share the joined range: a YOLO-style head that joins box coordinates (0..320 pixels)
with sigmoid class scores (0..1) leaves the scores 1/320 of the 256 uint8 levels, one or two
distinct values, and nearly every detection is lost while the output's cosine to float32
stays at 0.999 (the coordinates dominate it). Kept in float, the Concat reads each input
through its producer's own Q/DQ pair, with its own scale.

Only Concats whose output reaches a graph output through a chain of single-reader nodes
without weights (search.units' chain) are split: those nodes cost nothing to keep in float.
A Concat that feeds a layer (a Conv, MatMul) is left alone, since that layer quantizes the
joined tensor as its input anyway. Ops that compute (Add, Sum, Mul) are not affected at
all: their output is one quantity with its own range, and each input has its own scale on
the way in.

The ranges are measured on the prepared float graph with the calibration feeds (the Concat
inputs as extra outputs of a probe copy, batch by batch, a running min/max per input). A
search (passes/tunable's Builder) decides once: the decision is cached beside the
calibration cache, so every build of the shared graph keeps the same nodes in float.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.passes.tunable import WEIGHTED_OPS
from compress_engine.report import QuantChoice

if TYPE_CHECKING:
    import onnx

OPTION = "split_mixed_ranges"
# An input whose range is below 1/MAX_SPREAD of the joined range keeps fewer than
# 256 / 16 = 16 of the 8-bit levels: 4 bits or less, a step of over 6% of its own range
# (a sigmoid score then moves in steps of 0.06 around a 0.25 threshold). Inputs that differ
# by less (feature maps joined in a neck, typically within 2-4x) keep 64+ levels and are
# quantized as usual.
MAX_SPREAD = 16.0
# Ranges are maxima, so they settle quickly; more samples only cost float runs.
MAX_SAMPLES = 64
_FLOAT_TYPES = frozenset({1, 10, 11, 16})  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


@dataclass(frozen=True)
class OutputConcat:
    """A Concat of two or more activations whose output reaches a graph output."""

    name: str
    inputs: tuple[str, ...]  # its activation inputs
    members: tuple[str, ...]  # the Concat and the nodes carrying its output to the graph output
    output: str  # the graph output it reaches
    types: tuple[int, ...]  # the inputs' element types (onnx.TensorProto)


@dataclass(frozen=True)
class Measured:
    concat: OutputConcat
    ranges: tuple[tuple[float, float], ...]  # calibrated (min, max) per input
    symmetric: bool

    @property
    def spans(self) -> list[float]:
        """The range each input would get quantized alone (including 0, as ONNX Runtime's
        ranges do; max |x| on both sides when activations are symmetric)."""
        if self.symmetric:
            return [2 * max(abs(lo), abs(hi)) for lo, hi in self.ranges]
        return [max(hi, 0.0) - min(lo, 0.0) for lo, hi in self.ranges]

    @property
    def joined(self) -> float:
        lo = min(min(r[0] for r in self.ranges), 0.0)
        hi = max(max(r[1] for r in self.ranges), 0.0)
        return 2 * max(-lo, hi) if self.symmetric else hi - lo

    @property
    def spread(self) -> float:
        """Joined range / the smallest non-zero input range (1.0: nothing to gain)."""
        spans = [s for s in self.spans if s > 0 and np.isfinite(s)]
        if not spans or not np.isfinite(self.joined):
            return 1.0
        return self.joined / min(spans)

    @property
    def mixed(self) -> bool:
        return self.spread > MAX_SPREAD


def choose_split(
    enabled: bool,
    model_path: Path,
    feeds: Sequence[dict],
    work_dir: Path,
    *,
    excluded: Collection[str] = (),
    symmetric: bool = False,
    cache: Path | None = None,
) -> tuple[list[str], QuantChoice | None]:
    """The nodes of `model_path` (the prepared float graph) to keep in float so no output
    Concat shares one int8 scale across inputs of very different ranges, and the choice to
    record (None when the graph has no Concat of activations feeding an output).
    `cache`: where a search keeps the first build's decision for the later ones."""
    import onnx

    if cache is not None and cache.is_file():
        saved = json.loads(cache.read_text())
        choice = saved["choice"]
        return list(saved["nodes"]), None if choice is None else QuantChoice(**choice)
    model = onnx.load(str(model_path), load_external_data=False)
    concats = output_concats(model, excluded)
    if not concats:
        nodes, choice = [], None
    elif not enabled:
        nodes, choice = [], _choice("off", "split_mixed_ranges is off in the recipe.")
    else:
        tensors = {t: k for c in concats for t, k in zip(c.inputs, c.types, strict=True)}
        ranges = input_ranges(model_path, model, tensors, _first_samples(feeds), work_dir)
        measured = [
            Measured(c, tuple(ranges[t] for t in c.inputs), symmetric)
            for c in concats
            if all(t in ranges for t in c.inputs)
        ]
        nodes = [m for x in measured if x.mixed for m in x.concat.members]
        choice = _describe(measured) if measured else None
    if cache is not None:
        record = None if choice is None else choice.model_dump()
        cache.write_text(json.dumps({"nodes": nodes, "choice": record}))
    return nodes, choice


def output_concats(model: onnx.ModelProto, excluded: Collection[str] = ()) -> list[OutputConcat]:
    """Concats of two or more float activations (not excluded) whose output reaches a graph
    output through single-reader nodes without weights, with those nodes."""
    from compress_engine.search.units import fallback_units

    # A unit's chain stops at a weighted node, a merge, a branch or a graph output.
    units = fallback_units(
        model, weighted_types=WEIGHTED_OPS, quantized_types={"Concat"}, excluded=excluded
    )
    units = [u for u in units if u.op_type == "Concat" and u.feeds_output]
    if not units:  # most models: no shape inference needed
        return []
    types = _elem_types(model)
    constants = {t.name for t in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    nodes = {n.name: n for n in model.graph.node}
    outputs = {o.name for o in model.graph.output}
    found = []
    for unit in units:
        inputs = [
            i
            for i in nodes[unit.name].input
            if i and i not in constants and types.get(i) in _FLOAT_TYPES
        ]
        if len(set(inputs)) < 2:
            continue
        last = nodes[unit.members[-1]]
        output = next(o for o in last.output if o in outputs)
        inputs = list(dict.fromkeys(inputs))
        found.append(
            OutputConcat(
                unit.name, tuple(inputs), unit.members, output, tuple(types[i] for i in inputs)
            )
        )
    return found


def input_ranges(
    model_path: Path,
    model: onnx.ModelProto,
    tensors: Mapping[str, int],
    feeds: Sequence[dict],
    work_dir: Path,
) -> dict[str, tuple[float, float]]:
    """(min, max) of each tensor (name: element type) over `feeds`, from a copy of the float
    model with the tensors as extra outputs (one batch's values in memory at a time;
    non-finite values ignored)."""
    import onnx

    from compress_engine.device import physical_cores
    from compress_engine.measure.runtime import create_session
    from compress_engine.onnx_files import has_external_data

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(t, k, None)
        for t, k in tensors.items()
        if t not in present
    )
    # Weights in a data file stay there: the probe (its graph only) is written beside them.
    beside = has_external_data(model_path)
    path = model_path.with_name("mixed-ranges-probe.onnx") if beside else work_dir / "probe.onnx"
    onnx.save(probe, str(path))
    try:
        session = create_session(path, providers=["CPUExecutionProvider"], threads=physical_cores())
        lows = dict.fromkeys(tensors, np.inf)
        highs = dict.fromkeys(tensors, -np.inf)
        for feed in feeds:
            for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
                arr = np.asarray(value, dtype=np.float64)
                arr = arr[np.isfinite(arr)]
                if arr.size:
                    lows[name] = min(lows[name], float(arr.min()))
                    highs[name] = max(highs[name], float(arr.max()))
        del session
    finally:
        path.unlink(missing_ok=True)
    return {t: (lows[t], highs[t]) for t in tensors if lows[t] <= highs[t]}


def _describe(measured: Sequence[Measured]) -> QuantChoice:
    mixed = [m for m in measured if m.mixed]
    if not mixed:
        worst = max(m.spread for m in measured)
        return _choice(
            "off",
            f"The {_count(len(measured), 'Concat')} feeding the outputs join inputs of similar "
            f"calibrated ranges (at most {worst:.1f}x apart; split from {MAX_SPREAD:g}x): "
            "quantized as usual.",
        )
    parts = []
    for m in mixed:
        ranges = ", ".join(f"{lo:.4g}..{hi:.4g}" for lo, hi in m.ranges)
        carried = len(m.concat.members) - 1
        tail = f" and {_count(carried, 'node')} after it" if carried else ""
        parts.append(
            f"`{m.concat.name}`{tail} (to output `{m.concat.output}`): inputs calibrated at "
            f"{ranges}, the smallest {m.spread:.0f}x below the joined range, so one int8 scale "
            f"would leave it about {max(256 / m.spread, 1):.0f} of 256 levels"
        )
    return _choice(
        "on",
        f"Kept in float, each input keeping its own scale: {'; '.join(parts)} "
        f"(split from {MAX_SPREAD:g}x, fewer than {256 / MAX_SPREAD:.0f} levels).",
    )


def _first_samples(feeds: Sequence[dict]) -> list[dict]:
    taken, rows = [], 0
    for feed in feeds:
        if rows >= MAX_SAMPLES:
            break
        taken.append(feed)
        first = next(iter(feed.values()))
        rows += int(first.shape[0]) if getattr(first, "ndim", 0) else 1
    return taken


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type per tensor, from shape inference where the graph does not record it."""
    import onnx

    graph = model.graph
    # Where inference fails: the types the graph records; Concats of unknown types are skipped.
    with contextlib.suppress(Exception):
        graph = onnx.shape_inference.infer_shapes(model).graph
    found = {t.name: t.data_type for t in graph.initializer}
    for vi in (*graph.input, *graph.output, *graph.value_info):
        if vi.type.HasField("tensor_type"):
            found[vi.name] = vi.type.tensor_type.elem_type
    return found


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _choice(chosen: str, reason: str) -> QuantChoice:
    return QuantChoice(option=OPTION, chosen=chosen, reason=reason)
