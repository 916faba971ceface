"""Side-by-side comparison of 2-4 jobs: the report figures per row, the best value marked
only where it is better beyond measurement noise, ties marked as ties.

The noise comes from what each report measured: latency figures from the spread of the timed
runs (p90 - p50 for the median, p90 and throughput; p99 - p50 for the tail), accuracy from
the binomial standard error of top-1 over the scored samples (two jobs tie when they are
within 1.96 standard errors of their difference). Sizes, parameters, MACs and fidelity on
fixed inputs are exact: any difference counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.template.defaultfilters import filesizeformat

from web.templatetags.report_format import points_change, significant

MIN_JOBS, MAX_JOBS = 2, 4


@dataclass(frozen=True)
class Cell:
    text: str
    best: bool = False  # better than every other job beyond the noise
    tie: bool = False  # within the noise of the best value (with at least one other)
    noise: str = ""  # the spread that decided, for the tooltip


@dataclass(frozen=True)
class CompareRow:
    label: str
    cells: list[Cell]
    section: str


@dataclass(frozen=True)
class Metric:
    section: str
    label: str
    value: Callable[[Any], float | None]  # Report -> figure (None: not measured)
    better: str | None  # "min", "max", or None (no best)
    text: Callable[[float], str]
    # Report -> the spread of its figure (None: exact); two jobs tie when their figures
    # differ by no more than `tied` says for their two spreads.
    spread: Callable[[Any], float | None] = lambda r: None
    noise_name: str = ""
    spread_text: Callable[[float], str] | None = None  # how the spread reads; default `text`
    # True: `spread` is a standard error, and a tie is a difference within 1.96 standard
    # errors of the difference; False: a tie is a difference within the larger spread.
    standard_error: bool = False

    def tied(self, a: float, b: float, spread_a: float | None, spread_b: float | None) -> bool:
        if spread_a is None and spread_b is None:
            return a == b
        if self.standard_error:
            return abs(a - b) <= 1.96 * math.hypot(spread_a or 0.0, spread_b or 0.0)
        return abs(a - b) <= max(spread_a or 0.0, spread_b or 0.0)


def _count(value: float) -> str:
    return f"{int(value):,}"


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _sparsity(report: Any) -> float | None:
    nonzero, total = report.result.nonzero_parameters, report.result.parameters
    if nonzero is None or not total:
        return None
    return 1 - nonzero / total


def _metrics(reports: Sequence[Any]) -> list[Metric]:
    metrics = [
        Metric("Size", "File size", lambda r: r.result.size_bytes, "min", filesizeformat),
        Metric("Size", "Size vs original", lambda r: r.size_ratio, "min", lambda v: f"{v:.3f}×"),
        Metric("Size", "Parameters", lambda r: r.result.parameters, "min", _count),
        Metric("Size", "Non-zero parameters", lambda r: r.result.nonzero_parameters, "min", _count),
        Metric("Size", "Sparsity", _sparsity, "max", lambda v: f"{100 * v:.1f}%"),
        Metric("Size", "MACs (batch 1)", lambda r: r.result.macs, "min", _count),
    ]
    # Every batch size any of the jobs timed, in the order they were first met.
    batches = list(
        dict.fromkeys(b for r in reports if r is not None for b in r.result.latency_by_batch)
    )
    for batch in batches:

        def latency(attr: str, batch: str = batch) -> Callable[[Any], float | None]:
            def get(r: Any) -> float | None:
                lat = r.result.latency_by_batch.get(batch)
                return None if lat is None else getattr(lat, attr)

            return get

        def spread(tail: str, batch: str = batch) -> Callable[[Any], float | None]:
            def get(r: Any) -> float | None:
                lat = r.result.latency_by_batch.get(batch)
                return None if lat is None else max(getattr(lat, tail) - lat.p50_ms, 0.0)

            return get

        def throughput_spread(r: Any, batch: str = batch) -> float | None:
            lat = r.result.latency_by_batch.get(batch)
            if lat is None or not lat.p50_ms:
                return None
            return lat.throughput_per_s * max(lat.p90_ms - lat.p50_ms, 0.0) / lat.p50_ms

        p90_noise = "the p50–p90 spread of the timed runs"
        metrics += [
            Metric(
                "Latency", f"p50, batch {batch}", latency("p50_ms"), "min", _ms,
                spread("p90_ms"), p90_noise,
            ),
            Metric(
                "Latency", f"p90, batch {batch}", latency("p90_ms"), "min", _ms,
                spread("p90_ms"), p90_noise,
            ),
            Metric(
                "Latency", f"p99, batch {batch}", latency("p99_ms"), "min", _ms,
                spread("p99_ms"), "the p50–p99 spread of the timed runs",
            ),
            Metric(
                "Latency", f"Throughput, batch {batch}", latency("throughput_per_s"), "max",
                lambda v: f"{v:,.1f}/s", throughput_spread, p90_noise,
            ),
        ]  # fmt: skip
    metrics += [
        Metric(
            "Latency",
            "p50 vs original",
            lambda r: r.latency_ratio,
            "min",
            lambda v: f"{v:.3f}×",
            _ratio_spread,
            "the p50–p90 spread of the timed runs",
        ),
        Metric(
            "Quality",
            "Top-1 accuracy",
            lambda r: r.accuracy.result_top1 if r.accuracy else None,
            "max",
            lambda v: f"{100 * v:.2f}%",
            _top1_error,
            "standard error of top-1 over the samples",
            standard_error=True,
        ),
        Metric(
            "Quality",
            "Top-1 change",
            lambda r: -r.accuracy.drop_points if r.accuracy else None,
            "max",
            lambda v: points_change(-v),  # as the results page writes it
            lambda r: None if (e := _top1_error(r)) is None else 100 * e,
            "standard error of top-1 over the samples",
            lambda v: f"{v:.2f} pt",
            standard_error=True,
        ),
        Metric(
            "Quality",
            "Fidelity cosine",
            lambda r: r.fidelity.summary.cosine_similarity,
            "max",
            lambda v: f"{v:.6f}",
        ),
        Metric(
            "Quality",
            "Max abs error",
            lambda r: r.fidelity.summary.max_abs_diff,
            "min",
            significant,
        ),
    ]
    return metrics


def _ratio_spread(report: Any) -> float | None:
    """The latency ratio's spread: the result's relative p50–p90 spread, applied to it."""
    lat, ratio = report.result.latency, report.latency_ratio
    if ratio is None or not lat.p50_ms:
        return None
    return ratio * max(lat.p90_ms - lat.p50_ms, 0.0) / lat.p50_ms


def _top1_error(report: Any) -> float | None:
    """Binomial standard error of the result's top-1 over the samples it was scored on."""
    acc = report.accuracy
    if acc is None or not acc.samples:
        return None
    p = acc.result_top1
    # Never below one sample's worth: 100% or 0% on a few samples is not exact either.
    return max(math.sqrt(p * (1 - p) / acc.samples), 1 / acc.samples)


def mixing_problem(jobs: Sequence[Any]) -> str | None:
    """Language-model jobs compare with language-model jobs only: their latency is per
    generated token, their quality perplexity, neither comparable with an ONNX graph's."""
    llm = [job for job in jobs if job.model_version.is_llm]
    if llm and len(llm) != len(jobs):
        return (
            "Language-model jobs compare only with language-model jobs (perplexity, decode "
            "tokens/s, memory), ONNX jobs only with ONNX jobs (latency per inference, "
            f"accuracy, fidelity); {len(llm)} of the {len(jobs)} jobs picked are language-model "
            "jobs. Pick jobs of one kind."
        )
    return None


def compare_rows(reports: Sequence[Any]) -> list[CompareRow]:
    """One row per figure; `reports` are compress_engine Reports (None: the job has no
    report yet, shown as a dash). When at least two jobs have the figure, the best value is
    marked as best if it beats every other beyond their measured noise; otherwise it and the
    values within noise of it are marked as a tie. Language-model reports (all of them, see
    mixing_problem) compare on their own figures (jobs.compare_llm)."""
    from jobs.compare_llm import llm_metrics

    llm = any(r is not None and r.llm is not None for r in reports)
    rows = []
    for metric in llm_metrics() if llm else _metrics(reports):
        values = [None if r is None else metric.value(r) for r in reports]
        spreads = [None if r is None else metric.spread(r) for r in reports]
        present = [i for i, v in enumerate(values) if v is not None]
        if not present:
            continue
        best_of: set[int] = set()
        if metric.better and len(present) >= 2:
            pick = min if metric.better == "min" else max
            b = pick(present, key=lambda i: values[i])
            best_of = {
                i
                for i in present
                if metric.tied(values[b], values[i], spreads[b], spreads[i])  # type: ignore[arg-type]
            }
            if len(best_of) == len(present) and len({values[i] for i in present}) == 1:
                best_of = set()  # the same figure everywhere: nothing to pick
        tie = len(best_of) > 1
        cells = [
            Cell("–")
            if v is None
            else Cell(
                metric.text(v),
                best=i in best_of and not tie,
                tie=i in best_of and tie,
                noise=_noise_text(metric, spreads[i]),
            )
            for i, v in enumerate(values)
        ]
        rows.append(CompareRow(metric.label, cells, metric.section))
    return rows


def _noise_text(metric: Metric, spread: float | None) -> str:
    if spread is None or not metric.noise_name:
        return ""
    return f"±{(metric.spread_text or metric.text)(spread)} ({metric.noise_name})"
