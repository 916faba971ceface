"""Small number formatters shared by the CLI table and the bundle's REPORT.md."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers show them)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def recipe_and_versions_md(recipe: Mapping[str, Any], versions: Mapping[str, str]) -> list[str]:
    """REPORT.md's closing sections: the recipe as YAML and the library versions."""
    import yaml

    return [
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(dict(recipe), sort_keys=False).rstrip(),
        "```",
        "",
        "## Versions",
        "",
        *(f"- {k} {v}" for k, v in sorted(versions.items())),
        "",
    ]
