"""Small number formatters shared by the CLI table and the bundle's REPORT.md."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
