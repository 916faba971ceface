"""Number formats for reports: every figure shown the same way on every page."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def percent(value: float | None, digits: int = 2) -> str:
    """0.9731 -> "97.31%"."""
    if value is None:
        return "–"
    return f"{value * 100:.{digits}f}%"


@register.filter
def points_change(value: float | None) -> str:
    """An accuracy drop in points, shown as the signed change: 0.3 -> "−0.30 pt"."""
    if value is None:
        return "–"
    change = -value
    sign = "+" if change > 0 else "\u2212" if change < 0 else "\u00b1"
    return f"{sign}{abs(change):.2f} pt"


@register.filter
def significant(value: float | None, digits: int = 3) -> str:
    """Small errors and tolerances keep their digits: 9.5367e-07 -> "9.54e-07", 0.000337 ->
    "0.000337" (floatformat would show both as 0.000000)."""
    if value is None:
        return "–"
    return f"{value:.{digits}g}"


@register.filter
def step_time(seconds: float | None) -> str:
    """Seconds per training step: 0.00197 -> "1.97 ms", 1.5 -> "1.50 s"."""
    if seconds is None:
        return "–"
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"
