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
