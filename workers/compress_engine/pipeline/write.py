"""Stage 6: the report (figures, notes, artifacts with their checks) and the files, placed
into out_dir by rename with the report last: its presence means the run finished."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from compress_engine.device import describe_device
from compress_engine.measure.size import file_size, sha256_file
from compress_engine.notes import honest_notes
from compress_engine.onnx_files import (
    external_threshold,
    has_external_data,
    pack_zip,
    resave,
    rewrite,
)
from compress_engine.passes import PassResult
from compress_engine.pipeline.export import Exported
from compress_engine.pipeline.original import Original
from compress_engine.pipeline.result import Measured
from compress_engine.pipeline.state import Run
from compress_engine.pipeline.steps import Steps
from compress_engine.quality import describe_floor, passes_floor
from compress_engine.report import (
    ArtifactInfo,
    PruningDetails,
    QuantizationDetails,
    Report,
    TrainingDetails,
)

DetailsT = TypeVar("DetailsT", QuantizationDetails, PruningDetails)

REPORT_NAME = "report.json"
RECIPE_NAME = "recipe.yaml"


@dataclass
class Artifact:
    """The compressed model as it leaves: one file, or a zip with its external data."""

    path: Path
    name: str
    format: str
    # Extra forms of the final model (a zipped sparse model): (format, path, name).
    extras: list[tuple[str, Path, str]]


def write_report(
    run: Run, original: Original, steps: Steps, measured: Measured, exported: Exported
) -> Report:
    run.tracker.stage("Writing report", run.layout.write, 1.0)
    artifact = _artifact(run, steps, measured)
    report = build_report(run, original, steps, measured, exported, artifact)
    (run.work / RECIPE_NAME).write_text(run.recipe.to_yaml(), encoding="utf-8")
    (run.work / REPORT_NAME).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    # The report goes last: its presence means the run finished.
    for src, name in (
        (artifact.path, artifact.name),
        *((path, name) for _, path, name in artifact.extras),
        *((c.path, c.info.name) for c in exported.converted if c.path is not None),
        (run.work / RECIPE_NAME, RECIPE_NAME),
    ):
        _place(src, run.out_dir / name, run.placed)
    _place(run.work / REPORT_NAME, run.out_dir / REPORT_NAME, run.placed)
    run.tracker.done()
    return report


def _artifact(run: Run, steps: Steps, measured: Measured) -> Artifact:
    current, last = steps.current, steps.last
    path, name, fmt = current, f"model.{last.suffix}.onnx", "onnx"
    if has_external_data(current):
        if measured.result.size_bytes > external_threshold():
            path, name = _external_form(current, run.work, name)
            fmt = "onnx-external"
        else:
            # A step wrote external data because its input needed it, but the result fits.
            path = _one_file(current, run.work / "single" / name)
    extras = [(f, p, f"model.{last.suffix}{_suffixes(p)}") for f, p in last.extras]
    return Artifact(path=path, name=name, format=fmt, extras=extras)


def build_report(
    run: Run,
    original: Original,
    steps: Steps,
    measured: Measured,
    exported: Exported,
    artifact: Artifact,
) -> Report:
    ev, result, last = run.ev, measured.result, steps.last
    passes = [r for _, r in steps.results]
    # Measured already unless the file was re-packed for download.
    same_file = artifact.path == steps.current
    below_floor = passes_floor(measured.fidelity, ev.quality_floor)
    return Report(
        recipe=run.recipe.to_dict(),
        original=measured.original,
        result=result,
        fidelity=measured.fidelity,
        recommended=not below_floor,
        quality_reasons=below_floor,
        quality_floor=describe_floor(ev.quality_floor),
        artifacts=[
            ArtifactInfo(
                name=artifact.name,
                format=artifact.format,  # type: ignore[arg-type]
                precision=last.precision,
                size_bytes=result.size_bytes if same_file else file_size(artifact.path),
                sha256=result.sha256 if same_file else sha256_file(artifact.path),
                status="ok" if exported.onnx.failure is None else "failed",
                failure=exported.onnx.failure,
                check=exported.onnx.check,
                opset=exported.onnx.opset,
            ),
            *(
                ArtifactInfo(
                    name=name,
                    format=fmt,  # type: ignore[arg-type]
                    precision=last.precision,
                    size_bytes=file_size(path),
                    sha256=sha256_file(path),
                )
                for fmt, path, name in artifact.extras
            ),
            *(c.info for c in exported.converted),
        ],
        steps=run.timings,
        quantization=_first(passes, QuantizationDetails),
        accuracy=measured.accuracy,
        data=None if original.data is None else original.data.summary(ev.seed),
        input_shapes=original.shapes,
        input_shape_sources=original.shape_sources,
        inputs=original.info.inputs,
        outputs=original.info.outputs,
        device=describe_device(measured.original.latency.provider),
        runtimes=measured.runtimes,
        versions=versions(),
        notes=_notes(run, original, measured, passes),
        latency_ratio_by_batch={
            b: o.p50_ms / result.latency_by_batch[b].p50_ms
            for b, o in measured.original.latency_by_batch.items()
            if result.latency_by_batch[b].p50_ms > 0
        },
        latency_noise_by_batch=measured.noise,
        sensitivity=next((r.sensitivity for r in passes if r.sensitivity is not None), None),
        search=next((r.search for r in passes if r.search is not None), None),
        auto=next((r.auto for r in passes if r.auto is not None), None),
        pruning=_first(passes, PruningDetails),
        training=[r.details for r in passes if isinstance(r.details, TrainingDetails)],
    )


def _first(passes: list[PassResult], kind: type[DetailsT]) -> DetailsT | None:
    return next((r.details for r in passes if isinstance(r.details, kind)), None)


def _notes(run: Run, original: Original, measured: Measured, passes: list[PassResult]) -> list[str]:
    """What the result means (honest_notes) first, then what the stages noted on the way,
    then why latency was timed at other batch sizes than asked for."""
    ev = run.ev
    notes = (
        honest_notes(
            measured.original,
            measured.result,
            measured.fidelity,
            measured.accuracy,
            original.data,
            original.budget,
            next((r.auto for r in passes if r.auto is not None), None),
            _first(passes, QuantizationDetails),
            pruning=_first(passes, PruningDetails),
            trained=any(isinstance(r.details, TrainingDetails) for r in passes),
            noise=measured.noise,
        )
        + run.notes
    )
    batch = original.batch
    if batch != ev.batch_size:
        notes.append(
            f"The model fixes its batch dimension, so latency was measured at batch {batch}, "
            f"not the requested {ev.batch_size}."
        )
    elif not original.dynamic_batch and set(ev.batch_sizes) - {batch}:
        notes.append(
            f"The model fixes its batch dimension, so latency was measured at batch {batch} "
            "only, not at the further evaluate.batch_sizes."
        )
    return notes


def _suffixes(path: Path) -> str:
    # "model.sparse.onnx.zip" -> ".onnx.zip"
    return "".join(path.suffixes[-2:]) if len(path.suffixes) >= 2 else path.suffix


def _external_form(model: Path, work: Path, name: str) -> tuple[Path, str]:
    """A result with external data leaves as one zip: the graph named `name` and its data
    file renamed after it (`name.data`), as ONNX Runtime expects them side by side."""
    folder = work / "external"
    folder.mkdir()
    rewrite(model, folder / name)
    target = work / f"{name}.zip"
    pack_zip(folder / name, target)
    return target, target.name


def _one_file(model: Path, target: Path) -> Path:
    target.parent.mkdir()
    resave(model, target)
    return target


def _place(src: Path, dst: Path, placed: list[Path]) -> None:
    # Same filesystem (the scratch dir lives in out_dir), so this is an atomic rename.
    os.replace(src, dst)
    placed.append(dst)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import pydantic

    from compress_engine._version import ENGINE_VERSION

    return {
        "compress_engine": ENGINE_VERSION,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "pydantic": pydantic.VERSION,
        "python": platform.python_version(),
    }
