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
    rows += _latency_rows(original, result)
    if original.macs and result.macs:
        rows.append(
            ComparisonRow(
                "MACs (batch 1)",
                f"{original.macs:,}",
                f"{result.macs:,}",
                _ratio_text(original.macs, result.macs),
                _direction(result.macs, original.macs),
            )
        )
    return rows


# Changes smaller than this (e.g. a few quantization scales added to the parameter count,
# or timer noise) are shown as neutral rather than better or worse.
NEUTRAL_BAND = 0.01


def _latency_rows(original: Any, result: Any) -> list[ComparisonRow]:
    """p50 per measured batch size (p90 too at the first), original and result interleaved."""
    by_batch = original.latency_by_batch or {str(original.latency.batch_size): original.latency}
    rows = []
    for index, (batch, before) in enumerate(by_batch.items()):
        after = result.latency_by_batch.get(batch, result.latency if index == 0 else None)
        if after is None:
            continue
        stats = (("p50", "p50_ms"), ("p90", "p90_ms")) if index == 0 else (("p50", "p50_ms"),)
        for label, attr in stats:
            b, a = getattr(before, attr), getattr(after, attr)
            rows.append(
                ComparisonRow(
                    f"Latency {label}, batch {batch}",
                    f"{b:.3f} ms",
                    f"{a:.3f} ms",
                    _ratio_text(b, a),
                    _direction(a, b),
                )
            )
    return rows


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
