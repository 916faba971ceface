"""Stage 4: measure the result against the original: latency per batch size (interleaved
with the original and its identical copy, whose spread is the noise band), per runtime,
static figures, fidelity and, with labels, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

from compress_engine.device import CPU_PROVIDER
from compress_engine.measure.figures import measurement, static_figures
from compress_engine.measure.latency import measure_against_copy
from compress_engine.measure.runtimes import has_qdq_int8, runtime_latencies, single_thread_row
from compress_engine.pipeline.compare import compare
from compress_engine.pipeline.original import Original
from compress_engine.pipeline.state import Run
from compress_engine.pipeline.steps import Steps
from compress_engine.pipeline.validate import Validated
from compress_engine.report import (
    Accuracy,
    Fidelity,
    Latency,
    ModelMeasurement,
    NoiseBand,
    RuntimeLatency,
)
from compress_engine.report_figures import UNSTABLE_NOISE

LABEL = "Measuring compressed model"


@dataclass
class Measured:
    original: ModelMeasurement
    result: ModelMeasurement
    runtimes: list[RuntimeLatency]
    fidelity: Fidelity
    accuracy: Accuracy | None
    noise: dict[str, NoiseBand]  # per batch size, as latency_by_batch


def measure_result(run: Run, original: Original, steps: Steps, validated: Validated) -> Measured:
    run.tracker.stage(LABEL, run.layout.measure_result, run.layout.fidelity)
    ev = run.ev
    with run.timed("Measure result"):
        original_by_batch: dict[str, Latency] = {}
        result_by_batch: dict[str, Latency] = {}
        noise: dict[str, NoiseBand] = {}
        sizes = original.batch_sizes
        share = (run.layout.fidelity - run.layout.measure_result) / len(sizes)
        for j, b in enumerate(sizes):
            run.tracker.stage(
                LABEL,
                run.layout.measure_result + j * share,
                run.layout.measure_result + (j + 1) * share,
            )
            # Interleaved: drift of the machine during timing affects all models alike.
            o_lat, (r_lat,), noise[str(b)] = measure_against_copy(
                (original.session, original.feeds[b]),
                original.copy,
                [(validated.session, validated.feeds[b])],
                warmup=ev.warmup,
                runs=ev.latency_runs,
                batch_size=b,
                threads=run.threads,
                progress=run.tracker.sub,
            )
            original_by_batch[str(b)], result_by_batch[str(b)] = o_lat, r_lat
        before = measurement(original.figures, original_by_batch)
        after = measurement(static_figures(steps.current, original.macs_shapes), result_by_batch)
        identical = _identical(before, after, steps)
        if identical:
            noise = {b: band.including(_speedup(before, after, b)) for b, band in noise.items()}
        first = sizes[0]
        feeds = (original.feeds[first], validated.feeds[first])
        runtimes = runtime_latencies(
            run.model,
            steps.current,
            feeds,
            (before.latency, after.latency),
            noise=noise[str(first)],
            qdq_int8=has_qdq_int8(after.op_types),
            warmup=ev.warmup,
            runs=ev.latency_runs,
            batch_size=first,
            threads=run.threads,
            work=run.work,
        )
        band = noise[str(first)]
        if run.providers[0] == CPU_PROVIDER and run.threads > 1 and band.noise > UNSTABLE_NOISE:
            row = single_thread_row(
                run.model,
                steps.current,
                feeds,
                warmup=ev.warmup,
                runs=ev.latency_runs,
                batch_size=first,
            )
            if identical and row.noise is not None and row.speedup is not None:
                row.noise = row.noise.including(row.speedup)
            runtimes.append(row)
            run.notes.append(_unstable_note(run.threads, band, row))
        run.tracker.stage(LABEL, run.layout.fidelity, run.layout.export)
        fidelity, accuracy = compare(
            original.session,
            validated.session,
            original.info,
            original.shapes,
            ev,
            original.data,
            run.tracker.sub,
            run.notes,
        )
    return Measured(before, after, runtimes, fidelity, accuracy, noise)


def _identical(before: ModelMeasurement, after: ModelMeasurement, steps: Steps) -> bool:
    """Whether the result is the original itself (its bytes, or kept by auto): any gap in
    its timing is then noise by definition, one more sample of the band."""
    kept = all(r.precision == "unchanged" for _, r in steps.results)
    return kept or (bool(before.sha256) and before.sha256 == after.sha256)


def _speedup(before: ModelMeasurement, after: ModelMeasurement, batch: str) -> float:
    result = after.latency_by_batch[batch].p50_ms
    return before.latency_by_batch[batch].p50_ms / result if result > 0 else 1.0


def _unstable_note(threads: int, band: NoiseBand, row: RuntimeLatency) -> str:
    if row.status != "ok":
        return (
            f"The {threads}-thread timing was unstable on this machine (an identical copy of "
            f"the original timed up to ±{band.noise:.0%} apart), and timing at 1 thread failed: "
            f"{row.reason}."
        )
    return (
        f"The {threads}-thread timing was unstable on this machine (an identical copy of the "
        f"original timed up to ±{band.noise:.0%} apart), so latency was also timed at 1 "
        f'thread: {row.speed_text()} (the runtime row "{row.runtime}").'
    )
