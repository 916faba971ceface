"""Side-by-side comparison of 2-4 jobs: the report figures per row, best value marked."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.template.defaultfilters import filesizeformat

from web.templatetags.report_format import points_change, significant

MIN_JOBS, MAX_JOBS = 2, 4


@dataclass(frozen=True)
class Cell:
    text: str
    best: bool = False


@dataclass(frozen=True)
class CompareRow:
    label: str
    cells: list[Cell]
    section: str


@dataclass(frozen=True)
class _Metric:
    section: str
    label: str
    value: Callable[[Any], float | None]  # Report -> figure (None: not measured)
    better: str | None  # "min", "max", or None (no best)
    text: Callable[[float], str]


def _count(value: float) -> str:
    return f"{int(value):,}"


def _ms(value: float) -> str:
    return f"{value:.3f} ms"


def _sparsity(report: Any) -> float | None:
    nonzero, total = report.result.nonzero_parameters, report.result.parameters
    if nonzero is None or not total:
        return None
    return 1 - nonzero / total


def _metrics(reports: Sequence[Any]) -> list[_Metric]:
    metrics = [
        _Metric("Size", "File size", lambda r: r.result.size_bytes, "min", filesizeformat),
        _Metric("Size", "Size vs original", lambda r: r.size_ratio, "min", lambda v: f"{v:.3f}×"),
        _Metric("Size", "Parameters", lambda r: r.result.parameters, "min", _count),
        _Metric(
            "Size", "Non-zero parameters", lambda r: r.result.nonzero_parameters, "min", _count
        ),
        _Metric("Size", "Sparsity", _sparsity, "max", lambda v: f"{100 * v:.1f}%"),
        _Metric("Size", "MACs (batch 1)", lambda r: r.result.macs, "min", _count),
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

        metrics += [
            _Metric("Latency", f"p50, batch {batch}", latency("p50_ms"), "min", _ms),
            _Metric("Latency", f"p90, batch {batch}", latency("p90_ms"), "min", _ms),
            _Metric("Latency", f"p99, batch {batch}", latency("p99_ms"), "min", _ms),
            _Metric(
                "Latency",
                f"Throughput, batch {batch}",
                latency("throughput_per_s"),
                "max",
                lambda v: f"{v:,.1f}/s",
            ),
        ]
    metrics += [
        _Metric(
            "Latency", "p50 vs original", lambda r: r.latency_ratio, "min", lambda v: f"{v:.3f}×"
        ),
        _Metric(
            "Quality",
            "Top-1 accuracy",
            lambda r: r.accuracy.result_top1 if r.accuracy else None,
            "max",
            lambda v: f"{100 * v:.2f}%",
        ),
        _Metric(
            "Quality",
            "Top-1 change",
            lambda r: -r.accuracy.drop_points if r.accuracy else None,
            "max",
            lambda v: points_change(-v),  # as the results page writes it
        ),
        _Metric(
            "Quality",
            "Fidelity cosine",
            lambda r: r.fidelity.summary.cosine_similarity,
            "max",
            lambda v: f"{v:.6f}",
        ),
        _Metric(
            "Quality",
            "Max abs error",
            lambda r: r.fidelity.summary.max_abs_diff,
            "min",
            significant,
        ),
    ]
    return metrics


def compare_rows(reports: Sequence[Any]) -> list[CompareRow]:
    """One row per figure; `reports` are compress_engine Reports (None: the job has no
    report yet, shown as a dash). The best value of a row is marked when at least two jobs
    have it and they differ."""
    rows = []
    for metric in _metrics(reports):
        values = [None if r is None else metric.value(r) for r in reports]
        present = [v for v in values if v is not None]
        if not present:
            continue
        best = None
        if metric.better and len(present) >= 2 and len(set(present)) > 1:
            best = min(present) if metric.better == "min" else max(present)
        cells = [
            Cell("–") if v is None else Cell(metric.text(v), best is not None and v == best)
            for v in values
        ]
        rows.append(CompareRow(metric.label, cells, metric.section))
    return rows
