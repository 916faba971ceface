"""The latency gate (search/latency_gate.py) bound to ONNX Runtime: which nodes a build
quantized, each trial built from the tunable Builder's shared prepared graph (static int8:
the same nodes, fusions and calibrated ranges, only the excluded names differ; dynamic int8:
the group's nodes are left out of the quantizer's targets), and each timed interleaved
against the best build so far beside an identical copy of that build (its noise band), with
the run's timing feed and settings, as the report times the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.passes.base import Evaluator, PassResult
from compress_engine.report import GatedGroup, QuantizationDetails
from compress_engine.report_figures import UNSTABLE_NOISE
from compress_engine.search.latency_gate import (
    GateOutcome,
    Timing,
    gate_note,
    gate_search,
    op_groups,
    settle,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from compress_engine.passes.tunable import Builder

_QDQ = ("QuantizeLinear", "DequantizeLinear")
# A trial whose noise band is wider than UNSTABLE_NOISE is timed again, at most this often.
MAX_TIMINGS = 3
# Rounds per timing at least (evaluate.latency_runs if more): five blocks of four, so the band
# spans the identical pair's drift rather than one ratio.
MIN_ROUNDS = 20


@dataclass
class Gated:
    result: PassResult  # the build handed on
    groups: list[GatedGroup]  # every group timed, for QuantizationDetails.gated
    note: str | None  # the findings in one line; None when nothing was quantized

    def apply(self, res: PassResult) -> PassResult:
        """`res` (this build, or one made from the same graph after the gate, which keeps
        the same groups in float) with the gate's details and note."""
        if isinstance(res.details, QuantizationDetails):
            res.details = res.details.model_copy(update={"gated": self.groups})
        if self.note is not None:
            res.notes = [*res.notes, self.note]
        return res


def gate(
    first: PassResult, builder: Builder, ev: Evaluator, progress: Callable[[float], None]
) -> Gated:
    """The fastest build of `builder`'s graph that keeps the groups quantizing slowed down in
    float and still meets the budget and quality floor; later builds of `builder` keep the
    same nodes in float."""
    import onnx

    assert builder.prepared is not None, "first() prepares the shared graph"
    prepared = onnx.load(str(builder.prepared), load_external_data=False)
    built = onnx.load(str(first.model_path), load_external_data=False)
    shapes = {name: list(a.shape) for name, a in ev.latency_feed.items()}
    groups = op_groups(prepared, quantized_nodes(built, prepared), node_macs(prepared, shapes))
    timer = _Timer(ev)
    outcome: GateOutcome[PassResult] = gate_search(
        first,
        groups,
        build=lambda kept: builder.build(kept, "gate"),
        time=timer,
        discard=lambda res: builder.discard(res.model_path),
        progress=progress,
    )
    best = settle(outcome, lambda res: _rejected(res.model_path, ev))
    builder.gated = list(best.kept_in_float)
    note = gate_note(builder.config.mode, outcome) if outcome.trials else None
    return Gated(best.build, gated_groups(outcome), note)


def gated_groups(outcome: GateOutcome[PassResult]) -> list[GatedGroup]:
    return [
        GatedGroup(
            group=t.group.name,
            nodes=list(t.group.nodes),
            ratio=t.ratio,
            noise=t.noise,
            excluded=t.excluded,
            reason=t.reason,
        )
        for t in outcome.trials
    ]


def quantized_nodes(built: onnx.ModelProto, prepared: onnx.ModelProto) -> set[str]:
    """Names of the `prepared` graph's nodes that `built` quantized: QDQ-wrapped nodes (every
    input dequantized; static int8 keeps node names), and dynamic int8's integer nodes
    ("<name>_quant", a Gemm through its "<name>_MatMul" rewrite) and int8 Gather tables."""
    from compress_engine.passes.quantize import (
        _GEMM_MATMUL_SUFFIX,
        _QUANT_SUFFIX,
        _QUANTIZED,
        _QUANTIZED_FROM,
    )

    names = {n.name for n in prepared.graph.node}
    gemms = {n.name for n in prepared.graph.node if n.op_type == "Gemm"}
    dequantized = {o for n in built.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    tables = {t.name for t in built.graph.initializer if t.name.endswith(_QUANTIZED)}
    out: set[str] = set()
    for node in built.graph.node:
        if node.op_type in _QUANTIZED_FROM and node.name.endswith(_QUANT_SUFFIX):
            base = node.name.removesuffix(_QUANT_SUFFIX)
            gemm = base.removesuffix(_GEMM_MATMUL_SUFFIX)
            out.add(gemm if gemm != base and gemm in gemms else base)
            continue
        int8_table = node.op_type == "Gather" and bool(node.input) and node.input[0] in tables
        wrapped = (
            node.op_type not in _QDQ
            and any(node.input)
            and all(i in dequantized for i in node.input if i)
        )
        if int8_table or wrapped:
            out.add(node.name)
    return out & names


def node_macs(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """MACs per node at `shapes` (the timing feed's), counted as the report counts them; {}
    when shapes cannot be inferred (the groups are then ordered by node count)."""
    from compress_engine.measure.macs import _inferred_shapes, _node_macs

    inferred = _inferred_shapes(model, shapes)
    if inferred is None:
        return {}
    out = {}
    for node in model.graph.node:
        macs = _node_macs(node, inferred)
        if macs is not None:
            out[node.name] = macs
    return out


class _Timer:
    """Times a trial against the best build so far, interleaved with a second session of
    the best build's file: how far that identical copy times from it is the noise band."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        self._best: tuple[Path, onnxruntime.InferenceSession, onnxruntime.InferenceSession] | None
        self._best = None

    def __call__(self, best: PassResult, trial: PassResult) -> Timing:
        """The timing with the narrowest band of up to MAX_TIMINGS: a busy machine (another
        job's threads) can spread an identical pair so far apart that nothing is decidable,
        and a quieter window then decides on firmer ground; the band is still the one the
        ratio was measured with."""
        from compress_engine.measure.latency import measure_against_copy
        from compress_engine.measure.runtime import adapt_feed

        ev = self.ev
        best_session, copy = self._sessions(best.model_path)
        trial_session = self._session(trial.model_path)
        feed = dict(ev.latency_feed)
        timings: list[Timing] = []
        while len(timings) < MAX_TIMINGS and all(t.noise > UNSTABLE_NOISE for t in timings):
            best_latency, (trial_latency,), band = measure_against_copy(
                (best_session, adapt_feed(best_session, feed)),
                copy,
                [(trial_session, adapt_feed(trial_session, feed))],
                warmup=ev.warmup,
                runs=max(ev.latency_runs, MIN_ROUNDS),
                batch_size=ev.latency_batch,
                threads=ev.threads,
            )
            timings.append(Timing(best_latency.p50_ms, trial_latency.p50_ms, band.noise))
        return min(timings, key=lambda t: t.noise)

    def _sessions(
        self, path: Path
    ) -> tuple[onnxruntime.InferenceSession, onnxruntime.InferenceSession]:
        # The best build changes only when an exclusion is kept: open it (twice) once.
        if self._best is None or self._best[0] != path:
            self._best = (path, self._session(path), self._session(path))
        return self._best[1], self._best[2]

    def _session(self, path: Path) -> onnxruntime.InferenceSession:
        from compress_engine.measure.runtime import create_session

        return create_session(path, providers=self.ev.providers, threads=self.ev.threads)


def _rejected(path: Path, ev: Evaluator) -> list[str]:
    """Why a build may not be the answer: it misses evaluate's budget or quality floor,
    measured on the scorer's batches as `auto` and the accuracy-aware search measure them."""
    reasons = []
    if ev.budget is not None:
        metric = ev.scorer.metric(path, ev.budget)
        if not ev.budget.meets(metric):
            reasons.append(f"it misses the budget ({ev.budget.show(metric)})")
    return reasons + ev.below_floor(path)
