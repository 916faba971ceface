"""`quantize: {mode: auto}`: build the int8 modes that suit the model, each through the latency
gate (op types that quantized run slower are kept in float), time each interleaved with the
original, score it against the budget, and keep the best one (or the original).

The decision itself (compress_engine.auto) knows nothing of ONNX Runtime; this pass builds
the candidates and measures them with what the run's evaluator carries.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from compress_engine.auto import Candidate, candidate_modes, choose
from compress_engine.configs import AutoConfig, DynamicInt8Config, QuantizeStep, StaticInt8Config
from compress_engine.device import CPU_PROVIDER
from compress_engine.errors import EngineError
from compress_engine.onnx_files import model_bytes, rewrite
from compress_engine.passes.base import (
    Evaluator,
    Pass,
    PassContext,
    PassInfo,
    PassResult,
    SubStage,
)
from compress_engine.passes.registry import pass_for_step, register
from compress_engine.report import (
    AutoCandidate,
    AutoSummary,
    Latency,
    NoiseBand,
    QuantizationDetails,
)
from compress_engine.report_figures import UNSTABLE_NOISE
from compress_engine.search.latency_gate import GATE_NOTE

# Share of the step's progress slice building (and gating) the candidates takes.
BUILT = 0.6


@register
class AutoQuantize(Pass[AutoConfig]):
    info = PassInfo(
        name="quantize-auto",
        title="Automatic int8 quantization",
        stage="Quantizing (auto: trying int8 modes)",
        description=(
            "Tries the int8 modes that suit the model (static int8 only with a dataset), "
            "each with the op types that run slower quantized kept in float, measures each "
            "against the original on this machine and keeps the best one within the budget; "
            "keeps the original, and says why, when none is better."
        ),
        step="quantize",
        mode="auto",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = AutoConfig

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        """Hands back the chosen candidate's file where it was built (out_path goes unused)."""
        ev = ctx.require_evaluator("quantize mode auto")
        built, notes = _build_candidates(model_path, ctx, ev, self.config.objective)
        original_p50, candidates, noise, timing_notes = _measure(model_path, built, ev)
        notes = [*timing_notes, *notes]
        original_size = model_bytes(model_path)
        decision = choose(
            Candidate("original", original_size, original_p50, True),
            [
                Candidate(
                    c.mode,
                    c.size_bytes,
                    c.p50_ms,
                    c.meets_budget,
                    bool(c.quality_reasons),
                    quantized=_quantizes(built[c.mode]),
                )
                for c in candidates
            ],
            self.config.objective,
            noise,
        )
        summary = AutoSummary(
            objective=self.config.objective,
            original_size_bytes=original_size,
            original_p50_ms=original_p50,
            budget_metric=None if ev.budget is None else ev.budget.metric,
            budget=None if ev.budget is None else ev.budget.limit,
            candidates=candidates,
            pick=None if decision.pick is None else decision.pick.name,
            reason=decision.reason,
            noise=noise,
        )
        # What the latency gate found in the candidates not handed back (its own is in the
        # pick's notes) explains their figures.
        pick = None if decision.pick is None else decision.pick.name
        gates = [
            n
            for mode, res in built.items()
            if mode != pick
            for n in res.notes
            if n.startswith(GATE_NOTE)
        ]
        if pick is not None:
            res = built[pick]
            res.notes = [f"auto picked {pick}: {decision.reason}", *notes, *res.notes, *gates]
            res.auto = summary
            return res
        kept = ctx.work_dir / "auto-original.onnx"
        rewrite(model_path, kept)
        return PassResult(
            model_path=kept,
            suffix="original",
            precision="unchanged",
            notes=[f"auto: keep the original model. {decision.reason}", *notes, *gates],
            auto=summary,
        )


def _build_candidates(
    model_path: Path, ctx: PassContext, ev: Evaluator, objective: str
) -> tuple[dict[str, PassResult], list[str]]:
    """Each suitable mode built with default settings, by mode; a mode that cannot be built
    is skipped with a note. For latency every candidate goes through the latency gate; for
    size the gate's trade (bytes for speed) is not wanted, and choose() still refuses a
    candidate slower than the original."""
    has_data = ctx.data is not None and ctx.data.samples > 0
    modes = candidate_modes(ev.macs_by_op_type, has_data=has_data)
    built: dict[str, PassResult] = {}
    notes: list[str] = []
    for i, mode in enumerate(modes):
        # Each candidate (and its gate) within its share of 0..BUILT of the progress.
        gate = objective == "latency"
        cfg = (
            DynamicInt8Config(latency_gate=gate)
            if mode == "dynamic-int8"
            else StaticInt8Config(mode=mode, latency_gate=gate)
        )
        lo, hi = BUILT * i / len(modes), BUILT * (i + 1) / len(modes)
        work = ctx.work_dir / f"auto-{mode}"
        work.mkdir(parents=True)
        sub = replace(ev, stage=_within(ev.stage, lo, hi))
        try:
            built[mode] = pass_for_step(QuantizeStep(quantize=cfg)).run(
                model_path,
                work / "model.onnx",
                PassContext(
                    work_dir=work,
                    seed=ctx.seed,
                    data=ctx.data,
                    batch_size=ctx.batch_size,
                    evaluator=sub,
                ),
            )
        except EngineError as exc:
            notes.append(f"auto: {mode} could not be built and was skipped: {exc}")
    return built, notes


def _quantizes(res: PassResult) -> bool:
    """Whether anything in the build is quantized (a build whose every op type the latency
    gate kept in float is a re-serialised original)."""
    details = res.details
    return not isinstance(details, QuantizationDetails) or details.quantized_nodes > 0


def _within(stage: SubStage, lo: float, hi: float) -> SubStage:
    """stage() for a part lo..hi of the step's progress slice."""
    return lambda label, a, b: stage(label, lo + (hi - lo) * a, lo + (hi - lo) * b)


def _measure(
    model_path: Path, built: dict[str, PassResult], ev: Evaluator
) -> tuple[float, list[AutoCandidate], NoiseBand, list[str]]:
    """The original's p50, every candidate's figures, the timing's noise band and a note on
    the timing when it was redone: timed interleaved with the original and its identical copy
    (drift of the machine affects all alike), scored against the budget. When the
    multi-thread band is too wide to tell anything apart (UNSTABLE_NOISE), everything is timed
    again at 1 thread, where no thread pool competes with other work, and the narrower band
    decides."""
    from compress_engine.measure.runtime import create_session

    feed = dict(ev.latency_feed)
    sessions = [
        create_session(r.model_path, providers=ev.providers, threads=ev.threads)
        for r in built.values()
    ]
    original_latency, latencies, noise = _time(
        (ev.original, ev.original_copy), sessions, ev, feed, ev.threads, (BUILT, 0.8)
    )
    notes: list[str] = []
    if ev.providers[0] == CPU_PROVIDER and ev.threads > 1 and noise.noise > UNSTABLE_NOISE:
        pair = (
            create_session(model_path, providers=ev.providers, threads=1),
            create_session(model_path, providers=ev.providers, threads=1),
        )
        ones = [
            create_session(r.model_path, providers=ev.providers, threads=1) for r in built.values()
        ]
        one = _time(pair, ones, ev, feed, 1, (0.8, 0.9))
        if one[2].noise < noise.noise:
            notes.append(
                f"auto compared the candidates at 1 thread: at {ev.threads} threads an "
                f"identical copy of the original timed ±{noise.noise:.0%} apart from it, too "
                f"unstable to tell a speed-up from noise; at 1 thread ±{one[2].noise:.0%}."
            )
            original_latency, latencies, noise = one
    out = []
    for (mode, res), lat in zip(built.items(), latencies, strict=True):
        metric = None if ev.budget is None else ev.scorer.metric(res.model_path, ev.budget)
        below = ev.below_floor(res.model_path)
        out.append(
            AutoCandidate(
                mode=mode,
                size_bytes=model_bytes(res.model_path),
                p50_ms=lat.p50_ms,
                meets_budget=True if metric is None else ev.budget.meets(metric),  # type: ignore[union-attr]
                metric=metric,
                quality_reasons=below,
            )
        )
    return original_latency.p50_ms, out, noise, notes


def _time(
    original: tuple[Any, Any],
    sessions: list[Any],
    ev: Evaluator,
    feed: dict[str, Any],
    threads: int,
    span: tuple[float, float],
) -> tuple[Latency, list[Latency], NoiseBand]:
    from compress_engine.measure.latency import measure_against_copy
    from compress_engine.measure.runtime import adapt_feed

    return measure_against_copy(
        (original[0], feed),
        original[1],
        [(s, adapt_feed(s, feed)) for s in sessions],
        warmup=ev.warmup,
        runs=ev.latency_runs,
        batch_size=ev.latency_batch,
        threads=threads,
        progress=ev.stage("Timing auto candidates", *span),
    )
