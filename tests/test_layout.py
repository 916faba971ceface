"""Source-layout rules from DESIGN.md that are easy to break by accident."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_it_keeps_source_roots_out_of_the_package_namespace():
    # A package named `platform` would shadow Python's standard library module.
    assert not (REPO / "platform" / "__init__.py").exists()
    assert not (REPO / "workers" / "__init__.py").exists()


def test_it_keeps_the_engine_free_of_django():
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "workers" / "compress_engine").rglob("*.py")
        if re.search(r"^\s*(from|import)\s+django\b", path.read_text(), re.MULTILINE)
    ]
    assert offenders == []


def test_it_imports_no_heavy_framework_at_module_level_in_web_and_task_modules():
    heavy = re.compile(r"^(from|import)\s+(torch|onnxruntime)\b", re.MULTILINE)
    modules = [*(REPO / "platform").rglob("*.py"), *(REPO / "workers" / "jobrunner").rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in modules if heavy.search(p.read_text())]
    assert offenders == []
