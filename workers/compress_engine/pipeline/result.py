"""Stage 4: measure the result against the original: latency per batch size (interleaved),
per runtime, static figures, fidelity and, with labels, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

from compress_engine.measure.figures import measurement, static_figures
from compress_engine.measure.latency import measure_interleaved
from compress_engine.measure.runtimes import has_qdq_int8, runtime_latencies
from compress_engine.pipeline.compare import compare
from compress_engine.pipeline.original import Original
from compress_engine.pipeline.state import Run
from compress_engine.pipeline.steps import Steps
from compress_engine.pipeline.validate import Validated
from compress_engine.report import Accuracy, Fidelity, Latency, ModelMeasurement, RuntimeLatency

LABEL = "Measuring compressed model"


@dataclass
class Measured:
    original: ModelMeasurement
    result: ModelMeasurement
    runtimes: list[RuntimeLatency]
    fidelity: Fidelity
    accuracy: Accuracy | None


def measure_result(run: Run, original: Original, steps: Steps, validated: Validated) -> Measured:
    run.tracker.stage(LABEL, run.layout.measure_result, run.layout.fidelity)
    ev = run.ev
    with run.timed("Measure result"):
        original_by_batch: dict[str, Latency] = {}
        result_by_batch: dict[str, Latency] = {}
        sizes = original.batch_sizes
        share = (run.layout.fidelity - run.layout.measure_result) / len(sizes)
        for j, b in enumerate(sizes):
            run.tracker.stage(
                LABEL,
                run.layout.measure_result + j * share,
                run.layout.measure_result + (j + 1) * share,
            )
            # Interleaved: drift of the machine during timing affects both models alike.
            o_lat, r_lat = measure_interleaved(
                [(original.session, original.feeds[b]), (validated.session, validated.feeds[b])],
                warmup=ev.warmup,
                runs=ev.latency_runs,
                batch_size=b,
                threads=run.threads,
                progress=run.tracker.sub,
            )
            original_by_batch[str(b)], result_by_batch[str(b)] = o_lat, r_lat
        before = measurement(original.figures, original_by_batch)
        after = measurement(static_figures(steps.current, original.macs_shapes), result_by_batch)
        first = sizes[0]
        runtimes = runtime_latencies(
            run.model,
            steps.current,
            (original.feeds[first], validated.feeds[first]),
            (before.latency, after.latency),
            qdq_int8=has_qdq_int8(after.op_types),
            warmup=ev.warmup,
            runs=ev.latency_runs,
            batch_size=first,
            threads=run.threads,
            work=run.work,
        )
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
    return Measured(before, after, runtimes, fidelity, accuracy)
