"""The engine's entry point: `compress(model, recipe, data, out_dir, progress) -> Report`.

compress() checks its arguments, makes the run's scratch folder and removes whatever it
placed when the run fails; the work itself is the pipeline's stages, run in order.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from compress_engine.catalog import missing_data
from compress_engine.configs import EvaluateConfig, Recipe
from compress_engine.data import Dataset, as_dataset, load_dataset
from compress_engine.errors import EngineError
from compress_engine.inspect import inspect_onnx
from compress_engine.library_logs import aggregated_library_logs
from compress_engine.llm.entry import compress_llm, is_llm_source
from compress_engine.onnx_files import is_onnx_zip, model_files, unpack_zip
from compress_engine.pipeline.export import export_artifacts
from compress_engine.pipeline.original import measure_original
from compress_engine.pipeline.result import measure_result
from compress_engine.pipeline.state import Hooks, Progress, ProgressCallback, Run
from compress_engine.pipeline.steps import run_steps
from compress_engine.pipeline.validate import validate
from compress_engine.pipeline.write import write_report
from compress_engine.report import Report, TrainingPoint


def compress(
    model: Path,
    recipe: Recipe | Mapping[str, Any] | str,
    data: Dataset | Path | str | None = None,
    out_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    *,
    on_training: Callable[[TrainingPoint], None] | None = None,
    teachers: Mapping[str, Path] | None = None,
) -> Report:
    """Run `recipe` on the ONNX file `model`, write artifacts and a report into `out_dir`.

    Writes `model.<suffix>.onnx`, `recipe.yaml` and, last, `report.json` (the marker of a
    finished run); out_dir defaults to `<model stem>.compressed/` next to the model.
    `data` (a `.npz` path or a Dataset) is split into calibration samples (for passes that
    need data) and evaluation samples (accuracy with labels, and fidelity).
    progress(stage, fraction) gets non-decreasing fractions ending at 1.0; anything it raises
    (e.g. a cancellation) propagates unchanged and leaves no files behind in out_dir.
    on_training(point) gets one point per epoch of each distill/finetune step (a live curve);
    `teachers` maps a distill step's `teacher` name (other than "original") to an ONNX file.
    A language model (an onnxruntime-genai folder or its zip, a Hugging Face folder zip, a
    .gguf file) runs the weight-only pipeline instead (compress_engine.llm); its `data` is a
    .txt or .jsonl file of text, and it writes model.genai.zip.
    Raises EngineError for problems the user can fix.
    """
    recipe = Recipe.parse(recipe)
    if is_llm_source(Path(model)):
        if data is not None and not isinstance(data, str | Path):
            raise EngineError("A language model's data is a .txt or .jsonl file of text.")
        return compress_llm(Path(model), recipe, data, out_dir, progress)
    if recipe.is_llm:
        raise EngineError(
            "Quantize modes weight-only and llm-auto are for language models (a Hugging Face "
            "folder zip, a .gguf file, or an onnxruntime-genai folder); this model is a "
            "single ONNX graph: use dynamic-int8, static-int8, fp16, weight-int4 or auto."
        )
    if data is None and (missing := missing_data(recipe, has_data=False, has_labels=False)):
        raise EngineError(missing)
    model = Path(model)
    # Image folders are decoded for the model's inputs, which a zipped model shows only once
    # unpacked; every other dataset is checked before anything is written.
    deferred = data is not None and is_onnx_zip(model) and _is_zip(data)
    dataset = None if data is None or deferred else _checked_data(data, model, recipe)
    out_dir = Path(out_dir) if out_dir is not None else model.with_suffix(".compressed")
    out_dir.mkdir(parents=True, exist_ok=True)
    placed: list[Path] = []
    try:
        # Scratch inside out_dir: same filesystem (cheap renames), and big models fit.
        with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir) as tmp:
            work = Path(tmp)
            model = _private_copy(model, work / "input")
            if deferred:
                dataset = _checked_data(data, model, recipe)
            hooks = Hooks(
                on_training=on_training,
                teachers={
                    name: _private_copy(path, work / f"teacher{i}")
                    for i, (name, path) in enumerate((teachers or {}).items())
                },
            )
            run = Run(model, recipe, out_dir, work, Progress(progress), placed, hooks)
            return _run(run, dataset)
    except BaseException:
        # Nothing half-written may look like a finished run.
        for path in placed:
            path.unlink(missing_ok=True)
        raise


def _run(run: Run, dataset: Dataset | None) -> Report:
    """The stages in order, each handing what it made to the next; library warnings are
    counted and logged once per kind at the end (library_logs)."""
    with aggregated_library_logs():
        original = measure_original(run, dataset)
        steps = run_steps(run, original)
        validated = validate(run, original, steps)
        measured = measure_result(run, original, steps, validated)
        exported = export_artifacts(run, original, steps, validated, measured)
        return write_report(run, original, steps, measured, exported)


def _is_zip(data: Any) -> bool:
    return isinstance(data, str | Path) and Path(data).suffix.lower() == ".zip"


def _checked_data(data: Any, model: Path, recipe: Recipe) -> Dataset:
    dataset = _load_data(data, model, recipe.evaluate)
    labels = dataset.labels is not None
    if missing := missing_data(recipe, has_data=True, has_labels=labels):
        raise EngineError(missing)
    return dataset


def _load_data(data: Any, model: Path, ev: EvaluateConfig) -> Dataset:
    if _is_zip(data):
        # Image folders are decoded to the model's input size, channels and layout.
        inputs = inspect_onnx(model).inputs
        return load_dataset(data, inputs, image_mean=ev.image_mean, image_std=ev.image_std)
    return as_dataset(data, sample_axis=ev.sample_axis, constants=ev.constants)


def _private_copy(model: Path, folder: Path) -> Path:
    """The `.onnx` the run works on: a copy of the caller's file (with its external data
    files) in the run's scratch folder, never the file itself, which tools the stages call
    may write to (onnx2tf rewrites its input in place) and the last stage may move into
    out_dir (a result that is the original). A model zip (an ONNX file with its external
    data, the form of models over 2 GB) is unpacked there instead. The dataset needs no
    copy: it is read once, read-only, into memory."""
    model = Path(model)
    if is_onnx_zip(model):
        return unpack_zip(model, folder)
    if not model.is_file():
        return model  # inspect says what is wrong with the path
    try:
        files = model_files(model)
    except Exception:  # unreadable or a data file outside its folder: inspect explains
        files = [model]
    for path in files:
        if path.is_file():
            target = folder / path.relative_to(model.parent)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return folder / model.name
