"""The house rules of docs/architecture.md, read from the source with `ast`.

Each rule names the file, the line and the import that breaks it, and says where the code
should go instead, so a wrong import fails CI with a message a newcomer can act on.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLATFORM = REPO / "platform"
WORKERS = REPO / "workers"
ENGINE = WORKERS / "compress_engine"
JOBRUNNER = WORKERS / "jobrunner"

# What the web may import from the engine: its face and the recipe types.
ENGINE_FACE = {"compress_engine", "compress_engine.configs"}
PLATFORM_APPS = {"config", "accounts", "registry", "jobs", "web"}
MAX_MODULE_LINES = 600

# R4: the engine's floors, lowest first. A module may import its own floor and the floors
# below it, never one above. A module is placed by its longest matching dotted prefix
# (relative to compress_engine), so a new module inside an existing package finds its floor.
ENGINE_FLOORS: list[tuple[str, set[str]]] = [
    (
        "configs, report, errors",
        {
            "_version",
            "errors",
            "stages",
            "configs",
            "recipe_types",
            "quantize_configs",
            "export_configs",
            "torch_configs",
            "quality_configs",
            "tensors",
            "report",
            "report_figures",
            "report_search",
            "report_choices",
            "library_logs",
            "fidelity_text",
            "choices_text",
            "formatting",
            "presets",
            # Language models: recipe settings and report types.
            "llm_configs",
            "report_llm",
            # A language-model run's stages as slices of its progress (the catalog's plan).
            "llm.stage_plan",
        },
    ),
    (
        "data, inspect, file helpers",
        {
            "archives",
            "data",
            "data_layout",
            "dataset_info",
            "dataset_images",
            "images",
            "inspect",
            "ingest",
            "onnx_files",
            "device",
            "cpu_int8",
            "reference",
            "measure.params",
            # Language-model ingest (an HF folder zip or GGUF file -> onnxruntime-genai folder).
            "llm.child",
            "llm.hf_upload",
            "llm.gguf_upload",
            "llm.gguf_convert",
            "llm.genai_build",
            "llm.genai_check",
            "llm.llm_info",
            "llm.ingest_llm",
            # Loading a genai folder on the CPU with a thread count (measurement and checks).
            "llm.genai_runtime",
            "llm",
        },
    ),
    (
        "passes, tuning, measure, export",
        {
            "passes",
            "catalog",
            "tuning",
            "tuning_rank",
            "tuning_report",
            "auto",
            "search",
            "measure",
            "export",
            "torch_side",
            "bundle",
            "bundle_charts",
            "bundle_examples",
            "notes",
            "quality",
            # Language-model text data and measurement.
            "llm.text_data",
            "llm.perplexity",
            "llm.decode_speed",
            "llm.memory",
            "llm.generate",
            # A typed prompt answered by both models of a finished job (their stored zips).
            "llm.ask",
            # Language-model weight quantization, its auto search and the artifact.
            "llm.weight_plan",
            "llm.weight_quant",
            "llm.embedding_quant",
            "llm.nncf_weights",
            "llm.nbits_repack",
            "llm.auto_precision",
            "llm.quantized",
            "llm.report_text",
            "llm.genai_zip",
        },
    ),
    (
        "pipeline stages",
        {
            "pipeline",
            # A language model's run: its stages and report.
            "llm.pipeline",
            "llm.quantize_stage",
            "llm.measure_stage",
            "llm.write_stage",
            "llm.report_build",
        },
    ),
    (
        "entry (compress, CLI)",
        {"", "__main__", "api", "cli", "remote", "remote_client", "llm.entry"},
    ),
]


@dataclass(frozen=True)
class Import:
    path: Path  # the importing file
    line: int
    module: str  # the dotted module imported (a `from pkg import submodule` names the submodule)

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line} imports {self.module}"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_engine_module(dotted: str) -> bool:
    rel = dotted.split(".")[1:]
    base = ENGINE.joinpath(*rel) if rel else ENGINE
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _imports(path: Path, source: str | None = None) -> Iterator[Import]:
    """Every absolute import in a file, at any depth (lazy imports inside functions count).

    The project uses no relative imports; one would be reported as its dotted tail.
    """
    text = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                # `from compress_engine import stages` imports the submodule, not the face.
                if module.startswith("compress_engine") and _is_engine_module(sub):
                    yield Import(path, node.lineno, sub)
                else:
                    yield Import(path, node.lineno, module)


def _python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "migrations" not in p.parts)


def _top(module: str) -> str:
    return module.split(".")[0]


def test_it_keeps_source_roots_out_of_the_package_namespace():
    # A package named `platform` would shadow Python's standard library module.
    assert not (PLATFORM / "__init__.py").exists()
    assert not (WORKERS / "__init__.py").exists()


def test_r1_the_web_never_imports_the_worker():
    offenders = [
        imp.where()
        for path in _python_files(PLATFORM)
        for imp in _imports(path)
        if _top(imp.module) == "jobrunner"
    ]
    assert offenders == [], (
        "R1: nothing under platform/ imports jobrunner. Send tasks by name through "
        "platform/web/queue.py; code both sides need belongs in platform/ (the worker may "
        "import it). Offenders:\n  " + "\n  ".join(offenders)
    )


def test_r2_the_web_uses_only_the_engines_face():
    offenders = [
        imp.where()
        for path in _python_files(PLATFORM)
        for imp in _imports(path)
        if _top(imp.module) == "compress_engine" and imp.module not in ENGINE_FACE
    ]
    assert offenders == [], (
        "R2: platform/ imports only `compress_engine` and `compress_engine.configs`. Export "
        "what the web needs from workers/compress_engine/__init__.py (or add the rule to "
        "compress_engine/catalog.py) instead. Offenders:\n  " + "\n  ".join(offenders)
    )


def test_r3_the_engine_is_a_plain_library():
    banned = {"django", "jobrunner", "benchmarks", *PLATFORM_APPS}
    offenders = [
        imp.where()
        for path in _python_files(ENGINE)
        for imp in _imports(path)
        if _top(imp.module) in banned
    ]
    assert offenders == [], (
        "R3: compress_engine imports no Django, no jobrunner, no platform app and no "
        "benchmarks (it must run from its CLI and its own tests). Offenders:\n  "
        + "\n  ".join(offenders)
    )


def _floor(module: str) -> int | None:
    rel = module.removeprefix("compress_engine").removeprefix(".")
    best: tuple[int, int] | None = None  # (prefix length, floor)
    for floor, (_, prefixes) in enumerate(ENGINE_FLOORS):
        for prefix in prefixes:
            matches = rel == prefix or (prefix and rel.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), floor)
    return None if best is None else best[1]


def test_r4_every_engine_module_has_a_floor():
    unplaced = [
        str(path.relative_to(REPO))
        for path in _python_files(ENGINE)
        if _floor(_module_name(path, WORKERS)) is None
    ]
    assert unplaced == [], (
        "R4: place each new engine module on a floor in ENGINE_FLOORS (tests/test_layout.py) "
        "and in docs/architecture.md. Unplaced:\n  " + "\n  ".join(unplaced)
    )


def test_r4_engine_dependencies_run_one_way():
    offenders = []
    for path in _python_files(ENGINE):
        floor = _floor(_module_name(path, WORKERS))
        for imp in _imports(path):
            if _top(imp.module) != "compress_engine":
                continue
            target = _floor(imp.module)
            if floor is not None and target is not None and target > floor:
                offenders.append(
                    f"{imp.where()}: floor '{ENGINE_FLOORS[floor][0]}' may not import "
                    f"floor '{ENGINE_FLOORS[target][0]}'"
                )
    assert offenders == [], (
        "R4: inside the engine, dependencies run one way: entry -> pipeline -> passes/tuning/"
        "measure/export -> data/inspect/files -> configs/report/errors. Move the shared piece "
        "down a floor instead. Offenders:\n  " + "\n  ".join(offenders)
    )


def test_r5_the_worker_uses_only_the_engines_face():
    offenders = [
        imp.where()
        for path in _python_files(JOBRUNNER)
        for imp in _imports(path)
        if _top(imp.module) == "compress_engine" and imp.module not in ENGINE_FACE
    ]
    assert offenders == [], (
        "R5: workers/jobrunner (the top floor) may import platform models and services and "
        "the engine's face only. Offenders:\n  " + "\n  ".join(offenders)
    )


def test_it_keeps_modules_small():
    big = [
        f"{path.relative_to(REPO)} has {lines} lines"
        for path in [*_python_files(PLATFORM), *_python_files(WORKERS)]
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert big == [], f"Split modules over {MAX_MODULE_LINES} lines by concern:\n  " + "\n  ".join(
        big
    )


def test_it_imports_no_heavy_framework_at_module_level_in_web_and_task_modules():
    heavy = re.compile(r"^(from|import)\s+(torch|onnxruntime)\b", re.MULTILINE)
    modules = [*_python_files(PLATFORM), *_python_files(JOBRUNNER)]
    offenders = [str(p.relative_to(REPO)) for p in modules if heavy.search(p.read_text())]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "where", "seen"),
    [
        (
            "def f():\n    from jobrunner.tasks import run_job\n",
            "platform/jobs/x.py",
            "jobrunner.tasks",
        ),
        (
            "from compress_engine.data import Dataset\n",
            "platform/jobs/x.py",
            "compress_engine.data",
        ),
        ("from compress_engine import stages\n", "platform/jobs/x.py", "compress_engine.stages"),
        ("import django.conf\n", "workers/compress_engine/x.py", "django.conf"),
    ],
)
def test_the_import_reader_sees_lazy_and_submodule_imports(source, where, seen):
    # The rules are only as good as the reader: a wrong import in a new file must be seen.
    assert [i.module for i in _imports(REPO / where, source)] == [seen]


def test_the_floors_place_a_pass_below_the_entry():
    assert _floor("compress_engine.passes.new_pass") < _floor("compress_engine.api")
    assert _floor("compress_engine.measure.params") < _floor("compress_engine.measure.latency")
