"""The language-model door of compress(): recognise an LLM upload and run it in a scratch
folder that nothing half-written outlives.

An LLM arrives as the platform stores it (a zip of an onnxruntime-genai folder), as such a
folder, or, from the CLI, as the upload itself (a Hugging Face folder zip or a .gguf file),
which is built into a genai folder first, as ingest does.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from compress_engine.configs import Recipe
from compress_engine.library_logs import aggregated_library_logs
from compress_engine.pipeline.state import Progress, ProgressCallback, Run
from compress_engine.report import Report

GENAI_CONFIG = "genai_config.json"


def is_llm_source(model: Path) -> bool:
    """A genai folder (or its model.onnx), a zip holding genai_config.json or an HF
    config.json, or a GGUF file: read from names and first bytes only."""
    model = Path(model)
    if model.is_dir():
        return (model / GENAI_CONFIG).is_file()
    if model.suffix == ".onnx":
        return (model.parent / GENAI_CONFIG).is_file()
    if not model.is_file():
        return False
    with open(model, "rb") as fh:
        head = fh.read(4)
    if head == b"GGUF":
        return True
    if head != b"PK\x03\x04":
        return False
    try:
        with zipfile.ZipFile(model) as zf:
            names = {Path(n).name for n in zf.namelist()}
    except zipfile.BadZipFile:
        return False
    return GENAI_CONFIG in names or ("config.json" in names and not _has_onnx(names))


def _has_onnx(names: set[str]) -> bool:
    return any(n.endswith(".onnx") for n in names)


def compress_llm(
    model: Path,
    recipe: Recipe,
    text: Path | str | None,
    out_dir: Path | None,
    progress: ProgressCallback | None,
) -> Report:
    """compress() for a language model; writes model.genai.zip, recipe.yaml, REPORT.md and,
    last, report.json into out_dir. `text` is a .txt or .jsonl file of calibration and
    evaluation text (None: the bundled prose)."""
    from compress_engine.llm.pipeline import run_llm

    model = Path(model)
    out_dir = Path(out_dir) if out_dir is not None else model.with_suffix(".compressed")
    out_dir.mkdir(parents=True, exist_ok=True)
    placed: list[Path] = []
    try:
        with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir) as tmp:
            work = Path(tmp)
            folder = _genai_copy(model, work / "input")
            run = Run(folder / "model.onnx", recipe, out_dir, work, Progress(progress), placed)
            with aggregated_library_logs():
                return run_llm(run, None if text is None else Path(text))
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise


def _genai_copy(model: Path, dest: Path) -> Path:
    """The run's own genai folder: unpacked, copied, or built from an HF zip / GGUF."""
    from compress_engine.llm.genai_build import genai_folder_files

    if model.suffix == ".onnx":
        model = model.parent
    if model.is_dir():
        dest.mkdir(parents=True)
        for path in genai_folder_files(model):
            target = dest / path.relative_to(model)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return dest
    if _is_genai_zip(model):
        from compress_engine.onnx_files import unpack_zip

        return unpack_zip(model, dest).parent
    # An upload as it came (HF folder zip, GGUF): built the way ingest builds it.
    from compress_engine.llm.ingest_llm import build_from_upload

    return build_from_upload(model, dest)


def _is_genai_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return False
    with zipfile.ZipFile(path) as zf:
        return any(Path(n).name == GENAI_CONFIG for n in zf.namelist())
