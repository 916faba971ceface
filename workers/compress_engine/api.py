"""The engine's entry point: `compress(model, recipe, data, out_dir, progress) -> Report`."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.configs import EvaluateConfig, Recipe
from compress_engine.data import Dataset, as_dataset
from compress_engine.device import CPU_PROVIDER, describe_device, physical_cores
from compress_engine.errors import EngineError, short_message
from compress_engine.inspect import ModelInfo, inspect_onnx
from compress_engine.measure.accuracy import AccuracyCounter
from compress_engine.measure.fidelity import compare_outputs
from compress_engine.measure.inputs import (
    batch_dim_dynamic,
    fidelity_batches,
    random_feed,
    resolve_shapes,
)
from compress_engine.measure.latency import measure_latency
from compress_engine.measure.params import count_parameters, op_type_counts
from compress_engine.measure.runtime import adapt_feed, create_session
from compress_engine.measure.size import file_size, sha256_file
from compress_engine.passes import PassContext, PassResult, pass_for_step
from compress_engine.report import (
    Accuracy,
    ArtifactInfo,
    DataSummary,
    Fidelity,
    Latency,
    ModelMeasurement,
    QuantizationDetails,
    Report,
    StepTiming,
)

if TYPE_CHECKING:
    import onnxruntime

ProgressCallback = Callable[[str, float], None]

REPORT_NAME = "report.json"
RECIPE_NAME = "recipe.yaml"

# Progress fractions at which each stage starts; the passes share their slice equally.
_MEASURE_ORIGINAL = 0.0
_PASSES = 0.35
_VALIDATE = 0.50
_MEASURE_RESULT = 0.55
_FIDELITY = 0.80
_WRITE = 0.95

# Below these the report warns that the outputs moved noticeably.
_MIN_COSINE = 0.99
_MIN_TOP1 = 0.95
_SLOWER = 1.05
# Top-1 accuracy points lost above which the report warns.
_MAX_DROP_POINTS = 1.0
# Samples per run when feeding a dataset to a model with a dynamic batch dimension.
DATA_BATCH = 32


class _Data:
    """A dataset bound to the model and split into calibration and evaluation samples."""

    def __init__(self, dataset: Dataset, info: ModelInfo, ev: EvaluateConfig) -> None:
        self.dataset = dataset.for_model(info.inputs)
        self.calibration, evaluation = self.dataset.split(ev.calibration_fraction, seed=ev.seed)
        self.evaluation = evaluation.take(slice(0, ev.max_evaluation_samples))
        first = next((t for t in info.inputs if t.shape), None)
        lead = first.shape[0] if first is not None and not batch_dim_dynamic(first) else None
        # A fixed batch dim must be fed exactly; leftover samples are dropped.
        self.batch_size = lead if isinstance(lead, int) else DATA_BATCH
        self.drop_last = isinstance(lead, int)

    def summary(self, seed: int) -> DataSummary:
        return DataSummary(
            samples=self.dataset.samples,
            calibration_samples=self.calibration.samples,
            evaluation_samples=self.evaluation.samples,
            labels=self.dataset.labels is not None,
            seed=seed,
        )

    def evaluation_batches(self) -> list[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        return list(self.evaluation.batches(self.batch_size, drop_last=self.drop_last))


def compress(
    model: Path,
    recipe: Recipe | Mapping[str, Any] | str,
    data: Dataset | Path | str | None = None,
    out_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> Report:
    """Run `recipe` on the ONNX file `model`, write artifacts and a report into `out_dir`.

    Writes `model.<suffix>.onnx`, `recipe.yaml` and, last, `report.json` (the marker of a
    finished run); out_dir defaults to `<model stem>.compressed/` next to the model.
    `data` (a `.npz` path or a Dataset) is split into calibration samples (for passes that
    need data) and evaluation samples (accuracy with labels, and fidelity).
    progress(stage, fraction) gets non-decreasing fractions ending at 1.0; anything it raises
    (e.g. a cancellation) propagates unchanged and leaves no files behind in out_dir.
    Raises EngineError for problems the user can fix.
    """
    recipe = Recipe.parse(recipe)
    if data is None:
        for step in recipe.steps:
            info = pass_for_step(step).info
            if info.needs_data:
                raise EngineError(
                    f"{info.title} needs calibration data: give a dataset (.npz with arrays "
                    "named after the model inputs, or `x`), or pick a mode that needs none, "
                    "e.g. dynamic-int8."
                )
    dataset = None if data is None else as_dataset(data)
    model = Path(model)
    out_dir = Path(out_dir) if out_dir is not None else model.with_suffix(".compressed")
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = _Progress(progress)
    placed: list[Path] = []
    try:
        # Scratch inside out_dir: same filesystem (cheap renames), and big models fit.
        with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir) as tmp:
            return _run(model, recipe, dataset, out_dir, Path(tmp), tracker, placed)
    except BaseException:
        # Nothing half-written may look like a finished run.
        for path in placed:
            path.unlink(missing_ok=True)
        raise


def _run(
    model: Path,
    recipe: Recipe,
    dataset: Dataset | None,
    out_dir: Path,
    work: Path,
    tracker: _Progress,
    placed: list[Path],
) -> Report:
    ev = recipe.evaluate
    timings: list[StepTiming] = []
    notes: list[str] = []
    threads = physical_cores()
    providers = [CPU_PROVIDER]  # GPU measurement comes with the GPU worker queue

    # --- original ----------------------------------------------------------------------
    tracker.stage("Measuring original model", _MEASURE_ORIGINAL, _PASSES)
    with _timed(timings, "Measure original"):
        info = inspect_onnx(model)
        shapes = resolve_shapes(info.inputs, ev.batch_size, ev.input_shapes)
        data = None if dataset is None else _Data(dataset, info, ev)
        batch = _batch_of(info, shapes)
        feed = random_feed(info.inputs, shapes, np.random.default_rng(ev.seed))
        original_session = _session(
            model, providers, threads, "ONNX Runtime cannot load the original model"
        )
        _run_once(
            original_session,
            feed,
            "ONNX Runtime cannot run the original model on random inputs of shapes "
            f"{shapes} (set evaluate.input_shapes if these do not fit)",
        )
        original = _measurement(
            model,
            measure_latency(
                original_session,
                feed,
                warmup=ev.warmup,
                runs=ev.latency_runs,
                batch_size=batch,
                threads=threads,
                progress=tracker.sub,
            ),
        )

    # --- passes ------------------------------------------------------------------------
    current = model
    results: list[tuple[str, PassResult]] = []
    span = (_VALIDATE - _PASSES) / len(recipe.steps)
    for i, step in enumerate(recipe.steps):
        technique = pass_for_step(step)
        tracker.stage(technique.info.stage, _PASSES + i * span, _PASSES + (i + 1) * span)
        step_dir = work / f"step{i}"
        step_dir.mkdir()
        with _timed(timings, technique.info.title):
            res = technique.run(
                current,
                work / f"step{i}.onnx",
                PassContext(
                    work_dir=step_dir,
                    seed=ev.seed,
                    data=None if data is None else data.calibration,
                    batch_size=DATA_BATCH if data is None else data.batch_size,
                    progress=tracker.sub,
                ),
            )
        results.append((technique.info.title, res))
        notes.extend(res.notes)
        current = res.model_path
    last_title, last = results[-1]

    # --- validation --------------------------------------------------------------------
    tracker.stage("Validating result", _VALIDATE, _MEASURE_RESULT)
    with _timed(timings, "Validate result"):
        result_session = _session(
            current, providers, threads, f"{last_title} produced a model ONNX Runtime cannot load"
        )
        result_feed = adapt_feed(result_session, feed)  # e.g. float16 inputs after fp16
        _run_once(
            result_session, result_feed, f"{last_title} produced a model ONNX Runtime cannot run"
        )
        want = [o.name for o in original_session.get_outputs()]
        got = [o.name for o in result_session.get_outputs()]
        if want != got:
            raise EngineError(
                f"{last_title} changed the model outputs from {want} to {got}; cannot compare."
            )

    # --- measure result ----------------------------------------------------------------
    tracker.stage("Measuring compressed model", _MEASURE_RESULT, _FIDELITY)
    with _timed(timings, "Measure result"):
        result = _measurement(
            current,
            measure_latency(
                result_session,
                result_feed,
                warmup=ev.warmup,
                runs=ev.latency_runs,
                batch_size=batch,
                threads=threads,
                progress=tracker.sub,
            ),
        )
        tracker.stage("Measuring compressed model", _FIDELITY, _WRITE)
        fidelity, accuracy = _compare(
            original_session, result_session, info, shapes, ev, data, tracker.sub, notes
        )

    # --- report ------------------------------------------------------------------------
    tracker.stage("Writing report", _WRITE, 1.0)
    artifact_name = f"model.{last.suffix}.onnx"
    quant = next(
        (r.details for _, r in results if isinstance(r.details, QuantizationDetails)), None
    )
    notes = _honest_notes(original, result, fidelity, accuracy, data) + notes
    if batch != ev.batch_size:
        notes.append(
            f"The model fixes its batch dimension, so latency was measured at batch {batch}, "
            f"not the requested {ev.batch_size}."
        )
    report = Report(
        recipe=recipe.to_dict(),
        original=original,
        result=result,
        fidelity=fidelity,
        artifacts=[
            ArtifactInfo(
                name=artifact_name,
                format="onnx",
                precision=last.precision,
                size_bytes=result.size_bytes,
                sha256=result.sha256,
            )
        ],
        steps=timings,
        quantization=quant,
        accuracy=accuracy,
        data=None if data is None else data.summary(ev.seed),
        input_shapes=shapes,
        device=describe_device(original.latency.provider),
        versions=_versions(),
        notes=notes,
    )
    (work / RECIPE_NAME).write_text(recipe.to_yaml(), encoding="utf-8")
    (work / REPORT_NAME).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    # The report goes last: its presence means the run finished.
    for src, name in ((current, artifact_name), (work / RECIPE_NAME, RECIPE_NAME)):
        _place(src, out_dir / name, placed)
    _place(work / REPORT_NAME, out_dir / REPORT_NAME, placed)
    tracker.done()
    return report


# --- helpers ---------------------------------------------------------------------------


class _Progress:
    """Maps per-stage progress onto one non-decreasing overall fraction."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._label = ""
        self._lo = self._hi = self._last = 0.0

    def stage(self, label: str, lo: float, hi: float) -> None:
        self._label, self._lo, self._hi = label, lo, hi
        self._emit(lo)

    def sub(self, fraction: float) -> None:
        """Progress within the current stage, 0..1."""
        self._emit(self._lo + (self._hi - self._lo) * min(max(fraction, 0.0), 1.0))

    def done(self) -> None:
        self._label = "Done"
        self._emit(1.0)

    def _emit(self, value: float) -> None:
        self._last = max(self._last, min(value, 1.0))
        if self._callback is not None:
            self._callback(self._label, self._last)


@contextmanager
def _timed(timings: list[StepTiming], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings.append(StepTiming(name=name, wall_s=time.perf_counter() - start))


def _session(
    path: Path, providers: list[str], threads: int, failure: str
) -> onnxruntime.InferenceSession:
    try:
        return create_session(path, providers=providers, threads=threads)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        # Scratch paths mean nothing to the user; the file name is enough.
        message = short_message(exc).replace(str(path), path.name)
        raise EngineError(f"{failure}: {message}") from exc


def _run_once(
    session: onnxruntime.InferenceSession, feed: Mapping[str, np.ndarray], failure: str
) -> None:
    try:
        session.run(None, dict(feed))
    except Exception as exc:
        raise EngineError(f"{failure}: {short_message(exc)}") from exc


def _batch_of(info: ModelInfo, shapes: Mapping[str, list[int]]) -> int:
    """Samples per run: the leading dim of the first input that has one."""
    for t in info.inputs:
        if shapes[t.name]:
            return shapes[t.name][0]
    return 1


def _feeds(
    info: ModelInfo, batches: list[dict[str, list[int]]], seed: int
) -> Iterator[dict[str, np.ndarray]]:
    # One generator per batch, seeded by (seed, index): reproducible and independent of how
    # many batches were consumed before.
    for i, shapes in enumerate(batches, start=1):
        yield random_feed(info.inputs, shapes, np.random.default_rng([seed, i]))


def _compare(
    original: onnxruntime.InferenceSession,
    result: onnxruntime.InferenceSession,
    info: ModelInfo,
    shapes: Mapping[str, list[int]],
    ev: EvaluateConfig,
    data: _Data | None,
    progress: Callable[[float], None],
    notes: list[str],
) -> tuple[Fidelity, Accuracy | None]:
    """Fidelity (and, with labels, accuracy) on the evaluation split, else on random inputs."""
    batches = [] if data is None else data.evaluation_batches()
    if not batches:
        random_batches = fidelity_batches(info.inputs, shapes, ev.fidelity_samples)
        fidelity = compare_outputs(
            original,
            result,
            _feeds(info, random_batches, ev.seed),
            total=len(random_batches),
            progress=progress,
        )
        return fidelity, None
    labelled = all(labels is not None for _, labels in batches)
    counter = AccuracyCounter(output=original.get_outputs()[0].name)

    def score(index: int, ref: list[np.ndarray], got: list[np.ndarray]) -> None:
        labels = batches[index][1]
        if labelled and labels is not None:
            counter.add(ref[0], got[0], labels)

    fidelity = compare_outputs(
        original,
        result,
        (feed for feed, _ in batches),
        total=len(batches),
        progress=progress,
        on_outputs=score,
    )
    fidelity.inputs = "evaluation split"
    if counter.skipped is not None:
        notes.append(counter.skipped)
    return fidelity, counter.summary()


def _measurement(path: Path, latency: Latency) -> ModelMeasurement:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts = op_type_counts(proto)
    return ModelMeasurement(
        size_bytes=file_size(path),
        parameters=count_parameters(proto),
        nodes=sum(counts.values()),
        op_types=counts,
        sha256=sha256_file(path),
        latency=latency,
    )


def _place(src: Path, dst: Path, placed: list[Path]) -> None:
    # Same filesystem (the scratch dir lives in out_dir), so this is an atomic rename.
    os.replace(src, dst)
    placed.append(dst)


def _honest_notes(
    original: ModelMeasurement,
    result: ModelMeasurement,
    fidelity: Fidelity,
    accuracy: Accuracy | None,
    data: _Data | None,
) -> list[str]:
    notes = []
    if fidelity.inputs == "random":
        why = "no dataset" if data is None else "the evaluation split is empty"
        notes.append(
            f"Fidelity was measured on {fidelity.samples} random inputs ({why}): it shows how "
            "far the outputs moved, not accuracy on real data."
        )
    elif data is not None:
        measured = "Fidelity and accuracy were" if accuracy else "Fidelity was"
        notes.append(
            f"{measured} measured on the "
            f"{fidelity.samples}-sample evaluation split of the dataset, disjoint from the "
            f"{data.calibration.samples} calibration samples."
        )
        if accuracy is None and data.dataset.labels is None:
            notes.append("The dataset has no labels (`y`), so accuracy was not measured.")
    if accuracy is not None and accuracy.drop_points > _MAX_DROP_POINTS:
        notes.append(
            f"Top-1 accuracy dropped by {accuracy.drop_points:.2f} points "
            f"({accuracy.original_top1:.2%} -> {accuracy.result_top1:.2%}). Try per-channel "
            "weights, another calibration method, or keeping the first and last layers in float."
        )
    o, r = original.latency, result.latency
    # 5% slack: single-digit-percent differences are timer noise on a shared machine.
    if r.p50_ms > o.p50_ms * _SLOWER:
        notes.append(
            f"The compressed model is slower than the original on this device (p50 "
            f"{r.p50_ms:.3f} ms vs {o.p50_ms:.3f} ms). For small models the cost of quantizing "
            "activations (or converting types) at run time can outweigh the faster kernels."
        )
    if result.size_bytes >= original.size_bytes:
        notes.append(
            f"The compressed model is not smaller than the original ({result.size_bytes:,} vs "
            f"{original.size_bytes:,} bytes)."
        )
    s = fidelity.summary
    if s.cosine_similarity is None:
        notes.append(f"Output {s.name!r} contains NaN or Inf, so its differences are not shown.")
    elif s.cosine_similarity < _MIN_COSINE or (
        s.top1_agreement is not None and s.top1_agreement < _MIN_TOP1
    ):
        top1 = "" if s.top1_agreement is None else f", top-1 agreement {s.top1_agreement:.1%}"
        notes.append(
            f"Outputs moved noticeably (cosine {s.cosine_similarity:.4f}{top1}). Try "
            "per_channel: true (int8), a smaller block_size (int4), or exclude the most "
            "sensitive layers (often the first and last)."
        )
    return notes


def _versions() -> dict[str, str]:
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
