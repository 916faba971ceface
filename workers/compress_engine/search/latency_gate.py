"""The latency gate: keep in float the op types whose quantized form runs slower.

Quantizing is not always faster on a CPU: dynamic int8 convolutions quantize their activations
at run time around every ConvInteger (several times slower than float conv, measured), depthwise
convolutions have too little arithmetic per byte for int8 kernels to pay off, and the Q/DQ
around tiny MatMuls or Resize/Concat heads can cost more than they save. So the quantized nodes
of a build are grouped by op type (Conv split into depthwise and the rest), and each group,
most multiply-accumulates first, is tried kept in float: the trial is timed against the best
build so far, and the exclusion is kept only when the trial is faster beyond the timing's
noise band and MIN_GAIN, never on a coin toss. A kept exclusion makes the trial the new best,
which the next trial is timed against.

Backend-neutral: reads graphs with `onnx` only and takes plain callables (build a variant,
time two builds); passes/gate_build.py binds them to ONNX Runtime and the run's evaluator.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from compress_engine.auto import MIN_GAIN
from compress_engine.search.units import PASS_THROUGH

if TYPE_CHECKING:
    import onnx

# Each trial is a build and a timing: bound the gate's cost on models with many op types.
MAX_TRIALS = 6
DEPTHWISE = "Conv (depthwise)"
GATE_NOTE = "Latency gate"  # how the gate's note starts
# Float rounding allowed when a ratio sits exactly on the threshold.
_ROUNDING = 1e-9

B = TypeVar("B")  # a build: whatever `build` returns and `time` compares


@dataclass(frozen=True)
class OpGroup:
    """Quantized nodes of one op type, kept in float together in a trial."""

    name: str  # the op type, or "Conv (depthwise)"
    nodes: tuple[str, ...]  # node names in the graph the builds are made from
    macs: int  # their multiply-accumulates (0 for ops without counted arithmetic)


@dataclass(frozen=True)
class Timing:
    """Two builds timed in the same interleaved rounds."""

    best_ms: float  # p50 of the best build so far (the group quantized)
    trial_ms: float  # p50 of the trial (the group kept in float)
    noise: float  # the identical-copy noise band's half-width, e.g. 0.04 = ±4%


@dataclass(frozen=True)
class GroupTrial:
    """What timing one group kept in float found."""

    group: OpGroup
    ratio: float  # best p50 / trial p50: > 1 means quantizing the group was slower
    noise: float
    excluded: bool  # kept in float in the result
    reason: str


@dataclass(frozen=True)
class Link(Generic[B]):
    """One build of the chain: the first build, then each faster one the gate kept."""

    build: B
    kept_in_float: tuple[str, ...]  # the nodes the gate kept in float in it (in order)
    trial: int | None  # index in GateOutcome.trials of the trial that made it, None: first


@dataclass
class GateOutcome(Generic[B]):
    chain: list[Link[B]]
    trials: list[GroupTrial] = field(default_factory=list)
    untimed: list[OpGroup] = field(default_factory=list)  # beyond the trial limit
    max_trials: int = MAX_TRIALS

    @property
    def best(self) -> Link[B]:
        return self.chain[-1]


def threshold(noise: float) -> float:
    """How much faster a trial must be (as a fraction) for its exclusion to be kept."""
    return max(noise, MIN_GAIN)


def judge(group: str, timing: Timing) -> tuple[bool, float, str]:
    """(keep the group in float?, ratio, the reason in words) for one timed trial."""
    ratio = timing.best_ms / timing.trial_ms if timing.trial_ms > 0 else float("inf")
    gate = threshold(timing.noise)
    noise = f"noise ±{timing.noise:.0%}"
    if ratio > (1 + gate) * (1 + _ROUNDING):
        return True, ratio, f"kept {group} in float: quantized it ran {ratio:.2f}× slower ({noise})"
    if ratio * (1 + gate) < 1 - _ROUNDING:
        return (
            False,
            ratio,
            f"kept {group} quantized: it ran {1 / ratio:.2f}× faster quantized ({noise})",
        )
    return (
        False,
        ratio,
        f"kept {group} quantized: no speed change beyond the noise and the {MIN_GAIN:.0%} "
        f"minimum ({ratio:.2f}×, {noise})",
    )


def op_groups(
    model: onnx.ModelProto, quantized: Collection[str], macs_by_node: Mapping[str, int]
) -> list[OpGroup]:
    """The `quantized` nodes of `model` by op type, most MACs first (then most nodes);
    a Conv whose groups equal its input channels (more than one) is depthwise. Ops that only
    move or clip values are left out: they follow their input's precision, and keeping them
    in float only adds a dequantize and a quantize around them."""
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    members: dict[str, list[str]] = defaultdict(list)
    for node in model.graph.node:
        if node.name in quantized and node.op_type not in PASS_THROUGH:
            members[_group_of(node, weights)].append(node.name)
    groups = [
        OpGroup(name, tuple(nodes), sum(macs_by_node.get(n, 0) for n in nodes))
        for name, nodes in members.items()
    ]
    return sorted(groups, key=lambda g: (-g.macs, -len(g.nodes), g.name))


def _group_of(node: onnx.NodeProto, weights: Mapping[str, Sequence[int]]) -> str:
    if node.op_type != "Conv":
        return node.op_type
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    # A Conv weight is [C_out, C_in / group, kH, kW]: one input channel per group = depthwise.
    dims = weights.get(node.input[1]) if len(node.input) > 1 else None
    return (
        DEPTHWISE if group > 1 and dims is not None and len(dims) > 1 and dims[1] == 1 else "Conv"
    )


def gate_search(
    first: B,
    groups: Sequence[OpGroup],
    *,
    build: Callable[[Sequence[str]], B],
    time: Callable[[B, B], Timing],
    discard: Callable[[B], None] | None = None,
    max_trials: int = MAX_TRIALS,
    progress: Callable[[float], None] | None = None,
) -> GateOutcome[B]:
    """Try each group kept in float on top of the best build so far (`first` to begin with).

    build(kept_in_float) makes a build with those nodes in float, time(best, trial) times the
    two interleaved, discard(trial) frees a trial that was not kept.
    """
    outcome: GateOutcome[B] = GateOutcome(chain=[Link(first, (), None)], max_trials=max_trials)
    tried = [g for g in groups if g.nodes][:max_trials]
    outcome.untimed = [g for g in groups if g.nodes][max_trials:]
    for i, group in enumerate(tried):
        best = outcome.best
        kept = (*best.kept_in_float, *group.nodes)
        trial = build(kept)
        timing = time(best.build, trial)
        excluded, ratio, reason = judge(group.name, timing)
        outcome.trials.append(GroupTrial(group, ratio, timing.noise, excluded, reason))
        if excluded:
            outcome.chain.append(Link(trial, kept, len(outcome.trials) - 1))
        elif discard is not None:
            discard(trial)
        if progress is not None:
            progress((i + 1) / len(tried))
    return outcome


def settle(outcome: GateOutcome[B], rejected: Callable[[B], list[str]]) -> Link[B]:
    """The fastest build of the chain that `rejected` finds nothing against (the budget, the
    quality floor); the trials whose exclusion that leaves out are marked as not kept, with
    why. If none passes, the fastest: gating did not cause the miss (the first build missed
    too), and the report flags it as it would have."""
    failed: list[tuple[Link[B], list[str]]] = []
    for link in reversed(outcome.chain):
        reasons = rejected(link.build)
        if not reasons:
            break
        failed.append((link, reasons))
    else:
        return outcome.best
    for link, reasons in failed:
        assert link.trial is not None  # the first build is never in `failed` here
        t = outcome.trials[link.trial]
        reason = (
            f"kept {t.group.name} quantized: in float it ran {t.ratio:.2f}× faster (noise "
            f"±{t.noise:.0%}), but the result then failed: {'; '.join(reasons)}"
        )
        outcome.trials[link.trial] = GroupTrial(t.group, t.ratio, t.noise, False, reason)
    del outcome.chain[len(outcome.chain) - len(failed) :]
    return outcome.best


def gate_note(mode: str, outcome: GateOutcome[Any]) -> str:
    """The gate's findings in one line for the result's notes."""
    head = f"{GATE_NOTE} ({mode}, each op type timed kept in float against the best build)"
    if not outcome.trials:
        return f"{head}: no quantized node to time."
    excluded = [t for t in outcome.trials if t.excluded]
    kept = [t.group.name for t in outcome.trials if not t.excluded]
    if excluded:
        parts = [f"{t.reason} ({_nodes(len(t.group.nodes))})" for t in excluded]
        if kept:
            parts.append(f"kept quantized: {', '.join(kept)}")
    else:
        parts = [
            "nothing kept in float: no op type ran faster in float beyond the noise and "
            f"{MIN_GAIN:.0%} (timed: {', '.join(kept)})"
        ]
    if outcome.untimed:
        untimed = ", ".join(g.name for g in outcome.untimed)
        limit = outcome.max_trials
        parts.append(f"not timed (at most {limit} trial{'' if limit == 1 else 's'}): {untimed}")
    return f"{head}: {'; '.join(parts)}."


def _nodes(n: int) -> str:
    return f"{n} node{'' if n == 1 else 's'}"
