"""Turns an engine Report into rows the results page renders (before, after, change)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.template.defaultfilters import filesizeformat


@dataclass(frozen=True)
class ComparisonRow:
    label: str
    before: str
    after: str
    change: str
    better: bool | None  # None: no direction (e.g. unchanged)


def _ratio_text(before: float, after: float) -> str:
    if before == 0:
        return "n/a"
    return f"{after / before:.2f}\u00d7"  # multiplication sign


def comparison_rows(report: Any) -> list[ComparisonRow]:
    """`report` is a compress_engine.Report."""
    original, result = report.original, report.result
    rows = [
        ComparisonRow(
            "File size",
            filesizeformat(original.size_bytes),
            filesizeformat(result.size_bytes),
            _ratio_text(original.size_bytes, result.size_bytes),
            _direction(result.size_bytes, original.size_bytes),
        ),
        ComparisonRow(
            "Parameters",
            f"{original.parameters:,}",
            f"{result.parameters:,}",
            _ratio_text(original.parameters, result.parameters),
            _direction(result.parameters, original.parameters),
        ),
    ]
    for label, attr in (("Latency p50", "p50_ms"), ("Latency p90", "p90_ms")):
        before = getattr(original.latency, attr)
        after = getattr(result.latency, attr)
        rows.append(
            ComparisonRow(
                label,
                f"{before:.3f} ms",
                f"{after:.3f} ms",
                _ratio_text(before, after),
                _direction(after, before),
            )
        )
    return rows


# Changes smaller than this (e.g. a few quantization scales added to the parameter count,
# or timer noise) are shown as neutral rather than better or worse.
NEUTRAL_BAND = 0.01


def _direction(after: float, before: float) -> bool | None:
    if before == 0 or abs(after - before) / abs(before) < NEUTRAL_BAND:
        return None
    return after < before


def chart_data(report: Any) -> dict[str, Any]:
    """Compressed as a percentage of the original, for the results bar chart."""
    original, result = report.original, report.result
    pairs = [
        ("File size", original.size_bytes, result.size_bytes),
        ("Parameters", original.parameters, result.parameters),
        ("Latency p50", original.latency.p50_ms, result.latency.p50_ms),
    ]
    return {
        "labels": [label for label, _, _ in pairs],
        "percent": [
            round(100 * after / before, 1) if before else None for _, before, after in pairs
        ],
    }
