"""The engine's entry point: `compress(model, recipe, data, out_dir, progress) -> Report`."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.configs import TUNABLE_CONFIGS, AutoConfig, EvaluateConfig, Recipe
from compress_engine.data import Dataset, as_dataset, load_dataset
from compress_engine.device import CPU_PROVIDER, describe_device, physical_cores
from compress_engine.errors import EngineError, short_message
from compress_engine.export.litert import output_shapes
from compress_engine.export.tflite import convert_tflite
from compress_engine.export.verify import Checked, Compare, check_tflite
from compress_engine.inspect import ModelInfo, inspect_onnx
from compress_engine.measure.accuracy import AccuracyCounter
from compress_engine.measure.fidelity import OnOutputs, compare_outputs
from compress_engine.measure.inputs import (
    batch_dim_dynamic,
    fidelity_batches,
    random_feed,
    resolve_shapes,
)
from compress_engine.measure.latency import measure_interleaved
from compress_engine.measure.macs import count_macs
from compress_engine.measure.params import count_parameters, op_type_counts
from compress_engine.measure.runtime import adapt_feed, create_session
from compress_engine.measure.runtimes import has_qdq_int8, runtime_latencies
from compress_engine.measure.size import file_size, sha256_file
from compress_engine.measure.sparsity import count_nonzero_parameters
from compress_engine.notes import honest_notes
from compress_engine.onnx_files import (
    external_threshold,
    has_external_data,
    is_onnx_zip,
    model_bytes,
    pack_zip,
    resave,
    rewrite,
    unpack_zip,
)
from compress_engine.passes import PassContext, PassResult, pass_for_step
from compress_engine.report import (
    Accuracy,
    ArtifactCheck,
    ArtifactInfo,
    DataSummary,
    Fidelity,
    Latency,
    ModelMeasurement,
    PruningDetails,
    QuantizationDetails,
    Report,
    StepTiming,
    TrainingDetails,
    TrainingPoint,
)
from compress_engine.tuning import Builder, Scorer, auto_quantize, resolve_budget, tune

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
_FIDELITY = 0.75
_EXPORT = 0.82
_WRITE = 0.97

# Samples per run when feeding a dataset to a model with a dynamic batch dimension.
DATA_BATCH = 32


class _Data:
    """A dataset bound to the model and split into calibration, training and evaluation
    samples; without evaluate.training_fraction, training is the calibration split."""

    def __init__(self, dataset: Dataset, info: ModelInfo, ev: EvaluateConfig) -> None:
        self.dataset = dataset.for_model(info.inputs)
        if ev.training_fraction is None:
            self.calibration, evaluation = self.dataset.split(ev.calibration_fraction, seed=ev.seed)
            self.training = self.calibration
        else:
            self.calibration, self.training, evaluation = self.dataset.split(
                ev.calibration_fraction, ev.training_fraction, seed=ev.seed
            )
        self.evaluation = evaluation.take(slice(0, ev.max_evaluation_samples))
        first = next((t for t in info.inputs if t.shape), None)
        lead = first.shape[0] if first is not None and not batch_dim_dynamic(first) else None
        # A fixed batch dim must be fed exactly; leftover samples are dropped.
        self.batch_size = lead if isinstance(lead, int) else DATA_BATCH
        self.drop_last = isinstance(lead, int)

    @property
    def separate_training(self) -> bool:
        return self.training is not self.calibration

    def summary(self, seed: int) -> DataSummary:
        return DataSummary(
            samples=self.dataset.samples,
            calibration_samples=self.calibration.samples,
            training_samples=self.training.samples if self.separate_training else None,
            evaluation_samples=self.evaluation.samples,
            labels=self.dataset.labels is not None,
            seed=seed,
            classes=list(self.dataset.classes),
            preprocessing=self.dataset.description,
        )

    def evaluation_batches(self) -> list[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        return list(self.evaluation.batches(self.batch_size, drop_last=self.drop_last))


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
    Raises EngineError for problems the user can fix.
    """
    recipe = Recipe.parse(recipe)
    techniques = [pass_for_step(step) for step in recipe.steps]
    if data is None:
        for technique in techniques:
            if technique.needs_data():
                what = "calibration" if technique.info.step == "quantize" else "training"
                raise EngineError(
                    f"{technique.info.title} needs {what} data: give a dataset (.npz with arrays "
                    "named after the model inputs, or `x`), or pick a step that needs none, "
                    "e.g. quantize with mode dynamic-int8."
                )
    model = Path(model)
    # Image folders are decoded for the model's inputs, which a zipped model shows only once
    # unpacked; every other dataset is checked before anything is written.
    deferred = data is not None and is_onnx_zip(model) and _is_zip(data)
    dataset = None if data is None or deferred else _checked_data(data, model, recipe, techniques)
    out_dir = Path(out_dir) if out_dir is not None else model.with_suffix(".compressed")
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = _Progress(progress)
    placed: list[Path] = []
    try:
        # Scratch inside out_dir: same filesystem (cheap renames), and big models fit.
        with tempfile.TemporaryDirectory(prefix=".work-", dir=out_dir) as tmp:
            work = Path(tmp)
            model = _unpacked(model, work / "input")
            if deferred:
                dataset = _checked_data(data, model, recipe, techniques)
            hooks = _Hooks(
                on_training=on_training,
                teachers={
                    name: _unpacked(path, work / f"teacher{i}")
                    for i, (name, path) in enumerate((teachers or {}).items())
                },
            )
            return _run(model, recipe, dataset, out_dir, work, tracker, placed, hooks)
    except BaseException:
        # Nothing half-written may look like a finished run.
        for path in placed:
            path.unlink(missing_ok=True)
        raise


def _is_zip(data: Any) -> bool:
    return isinstance(data, str | Path) and Path(data).suffix.lower() == ".zip"


def _checked_data(data: Any, model: Path, recipe: Recipe, techniques: list[Any]) -> Dataset:
    dataset = _load_data(data, model, recipe.evaluate)
    if dataset.labels is None:
        for technique in techniques:
            if technique.needs_labels():
                raise EngineError(
                    f"{technique.info.title} trains on labels and this dataset has none "
                    "(add `y` or `labels` to the .npz)."
                )
    return dataset


def _load_data(data: Any, model: Path, ev: EvaluateConfig) -> Dataset:
    if _is_zip(data):
        # Image folders are decoded to the model's input size, channels and layout.
        inputs = inspect_onnx(model).inputs
        return load_dataset(data, inputs, image_mean=ev.image_mean, image_std=ev.image_std)
    return as_dataset(data)


def _run(
    model: Path,
    recipe: Recipe,
    dataset: Dataset | None,
    out_dir: Path,
    work: Path,
    tracker: _Progress,
    placed: list[Path],
    hooks: _Hooks,
) -> Report:
    ev = recipe.evaluate
    timings: list[StepTiming] = []
    notes: list[str] = []
    threads = ev.threads or physical_cores()
    providers = [CPU_PROVIDER]  # GPU measurement comes with the GPU worker queue

    # --- original ----------------------------------------------------------------------
    tracker.stage("Measuring original model", _MEASURE_ORIGINAL, _PASSES)
    with _timed(timings, "Measure original"):
        info = inspect_onnx(model)
        shapes = resolve_shapes(info.inputs, ev.batch_size, ev.input_shapes)
        data = None if dataset is None else _Data(dataset, info, ev)
        budget = resolve_budget(ev, labels=data is not None and data.dataset.labels is not None)
        batch = _batch_of(info, shapes)
        dynamic_batch = any(batch_dim_dynamic(t) for t in info.inputs if shapes[t.name])
        batch_sizes = list(dict.fromkeys([batch, *ev.batch_sizes])) if dynamic_batch else [batch]
        feeds = {
            b: random_feed(
                info.inputs, _shapes_at(info, shapes, b), np.random.default_rng([ev.seed, 0, b])
            )
            for b in batch_sizes
        }
        feed = feeds[batch_sizes[0]]
        original_session = _session(
            model, providers, threads, "ONNX Runtime cannot load the original model"
        )
        _run_once(
            original_session,
            feed,
            "ONNX Runtime cannot run the original model on random inputs of shapes "
            f"{shapes} (set evaluate.input_shapes if these do not fit)",
        )
        for b in batch_sizes[1:]:
            # Extra batch sizes are a bonus: a graph that bakes in its batch size (a Reshape
            # to [1, ...]) is timed at the first one only.
            try:
                original_session.run(None, feeds[b])
            except Exception as exc:
                notes.append(
                    f"The original model does not run at batch {b} ({short_message(exc)}), so "
                    "latency was not timed at that batch size."
                )
                del feeds[b]
        batch_sizes = list(feeds)
        tracker.sub(0.5)
        macs_shapes = _shapes_at(info, shapes, 1) if dynamic_batch else dict(shapes)
        original_static = _static_figures(model, macs_shapes)
        scorer = _scorer(original_session, info, shapes, ev, data, providers, threads)

    # --- passes ------------------------------------------------------------------------
    current = model
    # TFLite files are converted from the last float model: TFLite quantizes on its own.
    float_model = model
    results: list[tuple[str, PassResult]] = []
    sensitivity = search = auto = None
    span = (_VALIDATE - _PASSES) / len(recipe.steps)
    for i, step in enumerate(recipe.steps):
        technique = pass_for_step(step)
        lo, hi = _PASSES + i * span, _PASSES + (i + 1) * span
        tracker.stage(technique.info.stage, lo, hi)
        step_dir = work / f"step{i}"
        step_dir.mkdir()
        cfg = getattr(step, "quantize", None)
        tuning = isinstance(cfg, TUNABLE_CONFIGS) and (cfg.sensitivity or cfg.accuracy_aware)
        calibration = None if data is None else data.calibration
        training = None if data is None else data.training
        data_batch = DATA_BATCH if data is None else data.batch_size

        def sub_stage(label: str, a: float, b: float, lo: float = lo, hi: float = hi) -> Any:
            tracker.stage(label, lo + (hi - lo) * a, lo + (hi - lo) * b)
            return tracker.sub

        with _timed(timings, technique.info.title):
            if isinstance(cfg, AutoConfig):
                outcome = auto_quantize(
                    cfg,
                    current,
                    step_dir,
                    ev=ev,
                    macs_by_op_type=original_static["macs_by_op_type"],
                    data=calibration,
                    batch_size=data_batch,
                    original=original_session,
                    feed=feed,
                    latency_batch=batch_sizes[0],
                    budget=budget,
                    scorer=scorer,
                    providers=providers,
                    threads=threads,
                    progress=sub_stage,
                )
                res, auto = outcome.result, outcome.summary
                res.notes = outcome.notes
            else:
                run_hi = 0.4 if tuning else 1.0
                tracker.stage(technique.info.stage, lo, lo + (hi - lo) * run_hi)
                res = technique.run(
                    current,
                    work / f"step{i}.onnx",
                    PassContext(
                        work_dir=step_dir,
                        seed=ev.seed,
                        data=calibration,
                        training_data=training,
                        batch_size=data_batch,
                        progress=tracker.sub,
                        step_index=i,
                        original_model=model,
                        teachers=hooks.teachers,
                        on_training=hooks.on_training,
                    ),
                )
                if tuning:
                    builder = Builder(
                        config=cfg,  # type: ignore[arg-type]
                        model_in=current,
                        work=step_dir / "tuning",
                        seed=ev.seed,
                        data=calibration,
                        batch_size=data_batch,
                    )
                    tuned = tune(
                        res,
                        builder,
                        budget=budget,
                        scorer=scorer,
                        progress=lambda label, a, b: sub_stage(label, 0.4 + 0.6 * a, 0.4 + 0.6 * b),
                    )
                    sensitivity, search = tuned.sensitivity, tuned.search
                    res = tuned.result
                    res.notes = [*tuned.notes, *res.notes]
        results.append((technique.info.title, res))
        notes.extend(res.notes)
        current = res.model_path
        if technique.info.step != "quantize":
            float_model = current
    last_title, last = results[-1]

    # --- validation --------------------------------------------------------------------
    tracker.stage("Validating result", _VALIDATE, _MEASURE_RESULT)
    with _timed(timings, "Validate result"):
        result_session = _session(
            current, providers, threads, f"{last_title} produced a model ONNX Runtime cannot load"
        )
        result_feeds = {b: adapt_feed(result_session, f) for b, f in feeds.items()}
        for b in batch_sizes:
            _run_once(
                result_session,
                result_feeds[b],
                f"{last_title} produced a model ONNX Runtime cannot run",
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
        original_by_batch: dict[str, Latency] = {}
        result_by_batch: dict[str, Latency] = {}
        for j, b in enumerate(batch_sizes):
            share = (_FIDELITY - _MEASURE_RESULT) / len(batch_sizes)
            tracker.stage(
                "Measuring compressed model",
                _MEASURE_RESULT + j * share,
                _MEASURE_RESULT + (j + 1) * share,
            )
            # Interleaved: drift of the machine during timing affects both models alike.
            o_lat, r_lat = measure_interleaved(
                [(original_session, feeds[b]), (result_session, result_feeds[b])],
                warmup=ev.warmup,
                runs=ev.latency_runs,
                batch_size=b,
                threads=threads,
                progress=tracker.sub,
            )
            original_by_batch[str(b)], result_by_batch[str(b)] = o_lat, r_lat
        original = _measurement(model, original_static, original_by_batch)
        result = _measurement(current, _static_figures(current, macs_shapes), result_by_batch)
        first = batch_sizes[0]
        runtimes = runtime_latencies(
            model,
            current,
            (feeds[first], result_feeds[first]),
            (original.latency, result.latency),
            qdq_int8=has_qdq_int8(result.op_types),
            warmup=ev.warmup,
            runs=ev.latency_runs,
            batch_size=first,
            threads=threads,
            work=work,
        )
        tracker.stage("Measuring compressed model", _FIDELITY, _EXPORT)
        fidelity, accuracy = _compare(
            original_session, result_session, info, shapes, ev, data, tracker.sub, notes
        )

    # --- export ------------------------------------------------------------------------
    tracker.stage("Checking artifacts", _EXPORT, _WRITE)
    with _timed(timings, "Export and check"):
        onnx_check = _check_onnx(current, result_session, result, fidelity, accuracy)
        converted: list[Checked] = []
        if "tflite" in recipe.export:
            tracker.stage("Converting to TFLite", _EXPORT, _WRITE)
            converted = _export_tflite(
                recipe,
                float_model,
                model,
                [title for title, r in results if float_model == r.model_path],
                work,
                data,
                compare=lambda s, hook: _compare(
                    original_session, s, info, shapes, ev, data, lambda _: None, [], hook
                ),
                sessions={current: result_session},
                latency_feed=feed,
                providers=providers,
                threads=threads,
                info=info,
                progress=tracker.sub,
            )

    # --- report ------------------------------------------------------------------------
    tracker.stage("Writing report", _WRITE, 1.0)
    artifact_name, artifact_format = f"model.{last.suffix}.onnx", "onnx"
    artifact_file = current
    if has_external_data(current):
        if result.size_bytes > external_threshold():
            artifact_file, artifact_name = _external_form(current, work, artifact_name)
            artifact_format = "onnx-external"
        else:
            # A step wrote external data because its input needed it, but the result fits.
            artifact_file = _one_file(current, work / "single" / artifact_name)
    quant = next(
        (r.details for _, r in results if isinstance(r.details, QuantizationDetails)), None
    )
    pruning = next((r.details for _, r in results if isinstance(r.details, PruningDetails)), None)
    training = [r.details for _, r in results if isinstance(r.details, TrainingDetails)]
    # Extra forms of the final model (a zipped sparse model) are offered beside it.
    extras = [(fmt, path, f"model.{last.suffix}{_suffixes(path)}") for fmt, path in last.extras]
    notes = (
        honest_notes(
            original,
            result,
            fidelity,
            accuracy,
            data,
            budget,
            auto,
            quant,
            pruning=pruning,
            trained=bool(training),
        )
        + notes
    )
    if batch != ev.batch_size:
        notes.append(
            f"The model fixes its batch dimension, so latency was measured at batch {batch}, "
            f"not the requested {ev.batch_size}."
        )
    elif not dynamic_batch and set(ev.batch_sizes) - {batch}:
        notes.append(
            f"The model fixes its batch dimension, so latency was measured at batch {batch} "
            "only, not at the further evaluate.batch_sizes."
        )
    report = Report(
        recipe=recipe.to_dict(),
        original=original,
        result=result,
        fidelity=fidelity,
        artifacts=[
            ArtifactInfo(
                name=artifact_name,
                format=artifact_format,
                precision=last.precision,
                # Measured already unless the file was re-packed for download.
                size_bytes=result.size_bytes
                if artifact_file == current
                else file_size(artifact_file),
                sha256=result.sha256 if artifact_file == current else sha256_file(artifact_file),
                status="ok" if onnx_check.failure is None else "failed",
                failure=onnx_check.failure,
                check=onnx_check.check,
                opset=onnx_check.opset,
            ),
            *(
                ArtifactInfo(
                    name=name,
                    format=fmt,  # type: ignore[arg-type]
                    precision=last.precision,
                    size_bytes=file_size(path),
                    sha256=sha256_file(path),
                )
                for fmt, path, name in extras
            ),
            *(c.info for c in converted),
        ],
        steps=timings,
        quantization=quant,
        accuracy=accuracy,
        data=None if data is None else data.summary(ev.seed),
        input_shapes=shapes,
        inputs=info.inputs,
        outputs=info.outputs,
        device=describe_device(original.latency.provider),
        runtimes=runtimes,
        versions=_versions(),
        notes=notes,
        latency_ratio_by_batch={
            b: o.p50_ms / result_by_batch[b].p50_ms
            for b, o in original_by_batch.items()
            if result_by_batch[b].p50_ms > 0
        },
        sensitivity=sensitivity,
        search=search,
        auto=auto,
        pruning=pruning,
        training=training,
    )
    (work / RECIPE_NAME).write_text(recipe.to_yaml(), encoding="utf-8")
    (work / REPORT_NAME).write_text(report.model_dump_json(indent=2), encoding="utf-8")
    # The report goes last: its presence means the run finished.
    for src, name in (
        (artifact_file, artifact_name),
        *((path, name) for _, path, name in extras),
        *((c.path, c.info.name) for c in converted if c.path is not None),
        (work / RECIPE_NAME, RECIPE_NAME),
    ):
        _place(src, out_dir / name, placed)
    _place(work / REPORT_NAME, out_dir / REPORT_NAME, placed)
    tracker.done()
    return report


# --- helpers ---------------------------------------------------------------------------


@dataclass
class _Hooks:
    """What the caller hands to torch-side passes: a training-curve sink and teachers."""

    on_training: Callable[[TrainingPoint], None] | None
    teachers: dict[str, Path]


@dataclass
class _OnnxCheck:
    check: ArtifactCheck
    failure: str | None
    opset: int | None


def _check_onnx(
    path: Path,
    session: onnxruntime.InferenceSession,
    result: ModelMeasurement,
    fidelity: Fidelity,
    accuracy: Accuracy | None,
) -> _OnnxCheck:
    """The compressed ONNX file: the checker's verdict plus what ONNX Runtime measured."""
    import onnx
    import onnxruntime as ort

    try:
        onnx.checker.check_model(str(path))
        failure = None
    except Exception as exc:  # ValidationError, or a protobuf error on a damaged file
        failure = f"onnx.checker rejects it: {short_message(exc)}"
    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return _OnnxCheck(
        ArtifactCheck.measured(
            fidelity,
            accuracy,
            runtime=f"ONNX Runtime {ort.__version__}",
            provider=session.get_providers()[0],
            latency=result.latency,
        ),
        failure,
        opset,
    )


def _export_tflite(
    recipe: Recipe,
    float_model: Path,
    original: Path,
    made_by: list[str],
    work: Path,
    data: _Data | None,
    *,
    compare: Compare,
    sessions: Mapping[Path, onnxruntime.InferenceSession],
    latency_feed: Mapping[str, np.ndarray],
    providers: list[str],
    threads: int,
    info: ModelInfo,
    progress: Callable[[float], None],
) -> list[Checked]:
    """Convert the float model to TFLite in every configured precision and check each file."""
    ev = recipe.evaluate
    conversion = convert_tflite(
        float_model,
        work / "tflite",
        recipe.tflite,
        None if data is None else data.calibration,
    )
    progress(0.5)
    # Converted from the original: the comparison's reference outputs are the source's.
    source = (
        None
        if float_model == original
        else sessions.get(float_model)
        or _session(
            float_model, providers, threads, "ONNX Runtime cannot load the model to convert"
        )
    )
    source_name = (
        "the original model" if float_model == original else f"the model after {made_by[-1]}"
    ) + " (float32)"
    return check_tflite(
        conversion,
        source=source,
        source_name=source_name,
        compare=compare,
        input_names=[t.name for t in info.inputs],
        onnx_outputs=output_shapes(info.outputs),
        latency_feed=latency_feed,
        threads=threads,
        warmup=ev.warmup,
        runs=ev.latency_runs,
        progress=lambda f: progress(0.5 + 0.5 * f),
    )


def _suffixes(path: Path) -> str:
    # "model.sparse.onnx.zip" -> ".onnx.zip"
    return "".join(path.suffixes[-2:]) if len(path.suffixes) >= 2 else path.suffix


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
    on_outputs: OnOutputs | None = None,
) -> tuple[Fidelity, Accuracy | None]:
    """Fidelity (and, with labels, accuracy) on the evaluation split, else on random inputs.

    on_outputs sees every batch's feed and outputs, for another comparison in the same pass.
    """
    batches = [] if data is None else data.evaluation_batches()
    if not batches:
        random_batches = fidelity_batches(info.inputs, shapes, ev.fidelity_samples)
        fidelity = compare_outputs(
            original,
            result,
            _feeds(info, random_batches, ev.seed),
            total=len(random_batches),
            progress=progress,
            on_outputs=on_outputs,
        )
        return fidelity, None
    labelled = all(labels is not None for _, labels in batches)
    counter = AccuracyCounter(output=original.get_outputs()[0].name)

    def score(
        index: int, feed: Mapping[str, np.ndarray], ref: list[np.ndarray], got: list[np.ndarray]
    ) -> None:
        labels = batches[index][1]
        if labelled and labels is not None:
            counter.add(ref[0], got[0], labels)
        if on_outputs is not None:
            on_outputs(index, feed, ref, got)

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


def _static_figures(path: Path, macs_shapes: Mapping[str, list[int]]) -> dict[str, Any]:
    """Figures of the file itself: size, parameters, non-zero parameters, MACs, op types."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts = op_type_counts(proto)
    macs = count_macs(proto, macs_shapes)
    try:
        nonzero: int | None = count_nonzero_parameters(proto, base_dir=path.parent)
    except Exception:  # unreadable external data: the figure is left out, not the run
        nonzero = None
    return {
        "size_bytes": model_bytes(path),
        "parameters": count_parameters(proto),
        "nonzero_parameters": nonzero,
        "nodes": sum(counts.values()),
        "op_types": counts,
        "sha256": sha256_file(path),
        "macs": macs.total,
        "macs_by_op_type": macs.by_op_type,
        "macs_uncounted_op_types": macs.uncounted_op_types,
    }


def _measurement(
    path: Path, figures: Mapping[str, Any], by_batch: dict[str, Latency]
) -> ModelMeasurement:
    return ModelMeasurement(
        **figures, latency=next(iter(by_batch.values())), latency_by_batch=by_batch
    )


def _shapes_at(
    info: ModelInfo, shapes: Mapping[str, list[int]], batch: int
) -> dict[str, list[int]]:
    """`shapes` with every dynamic leading (batch) dim set to `batch`."""
    out = {}
    for t in info.inputs:
        s = list(shapes[t.name])
        if s and batch_dim_dynamic(t):
            s[0] = batch
        out[t.name] = s
    return out


def _scorer(
    original: onnxruntime.InferenceSession,
    info: ModelInfo,
    shapes: Mapping[str, list[int]],
    ev: EvaluateConfig,
    data: _Data | None,
    providers: list[str],
    threads: int,
) -> Scorer:
    """Scores candidates on the batches the report's fidelity uses (evaluation split or the
    seeded random inputs), so a trial's metric and the final report agree."""
    batches: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = (
        [] if data is None else data.evaluation_batches()
    )
    if not batches:
        random_batches = fidelity_batches(info.inputs, shapes, ev.fidelity_samples)
        batches = [(f, None) for f in _feeds(info, random_batches, ev.seed)]
    return Scorer(original, batches, providers=providers, threads=threads)


def _unpacked(model: Path, folder: Path) -> Path:
    """The `.onnx` to work on: a model zip (an ONNX file with its external data, the form of
    models over 2 GB) is unpacked into the run's scratch folder first."""
    if not is_onnx_zip(model):
        return model
    return unpack_zip(model, folder)


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
