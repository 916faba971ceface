"""Stage 2: run the recipe's steps in order, each pass with its own slice of the progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compress_engine.ingest.capability import missing_package_error
from compress_engine.passes import PassContext, PassResult, pass_for_step
from compress_engine.passes.base import Evaluator, SubStage
from compress_engine.pipeline.original import Original
from compress_engine.pipeline.splits import DATA_BATCH
from compress_engine.pipeline.state import Run


@dataclass
class Steps:
    """What the steps made: each step's result (by title), the final model, and the last
    float model (TFLite files are converted from it: TFLite quantizes on its own)."""

    results: list[tuple[str, PassResult]]
    current: Path
    float_model: Path

    @property
    def last_title(self) -> str:
        return self.results[-1][0]

    @property
    def last(self) -> PassResult:
        return self.results[-1][1]


def run_steps(run: Run, original: Original) -> Steps:
    current = float_model = run.model
    results: list[tuple[str, PassResult]] = []
    _preflight(run, original)
    for i, step in enumerate(run.recipe.steps):
        technique = pass_for_step(step)
        lo, hi = run.layout.steps[i]
        run.tracker.stage(technique.info.stage, lo, hi)
        step_dir = run.work / f"step{i}"
        step_dir.mkdir()
        with run.timed(technique.info.title):
            ctx = _context(run, original, i, step_dir, _sub_stages(run, lo, hi))
            try:
                res = technique.run(current, run.work / f"step{i}.onnx", ctx)
            except ImportError as exc:  # the server lacks a package: say which, not a traceback
                missing = missing_package_error(f"run {technique.info.title.lower()}", exc)
                if missing is None:
                    raise
                raise missing from exc
        results.append((technique.info.title, res))
        run.notes.extend(res.notes)
        current = res.model_path
        if technique.info.step != "quantize":
            float_model = current
    return Steps(results=results, current=current, float_model=float_model)


def _preflight(run: Run, original: Original) -> None:
    """Each step checks up front what it cannot do (e.g. the torch side cannot rebuild or
    prune this model, or feed its dataset): a refusal in seconds, before any step spends
    minutes. Every step is handed the original model (its step_index says which step it is)."""
    if not run.recipe.steps:
        return
    lo = run.layout.steps[0][0]
    for i, step in enumerate(run.recipe.steps):
        technique = pass_for_step(step)
        work = run.work / f"preflight{i}"
        work.mkdir()
        ctx = _context(run, original, i, work, _sub_stages(run, lo, lo))
        try:
            technique.preflight(run.model, ctx)
        except ImportError as exc:
            missing = missing_package_error(f"run {technique.info.title.lower()}", exc)
            if missing is None:
                raise
            raise missing from exc


def _sub_stages(run: Run, lo: float, hi: float) -> SubStage:
    """stage(label, a, b): a sub-stage over a..b of the step's slice lo..hi."""

    def stage(label: str, a: float, b: float) -> Callable[[float], None]:
        run.tracker.stage(label, lo + (hi - lo) * a, lo + (hi - lo) * b)
        return run.tracker.sub

    return stage


def _context(
    run: Run,
    original: Original,
    index: int,
    step_dir: Path,
    stage: SubStage,
) -> PassContext:
    ev, data = run.ev, original.data
    return PassContext(
        work_dir=step_dir,
        seed=ev.seed,
        data=None if data is None else data.calibration,
        training_data=None if data is None else data.training,
        batch_size=DATA_BATCH if data is None else data.batch_size,
        progress=run.tracker.sub,
        step_index=index,
        original_model=run.model,
        teachers=run.hooks.teachers,
        on_training=run.hooks.on_training,
        input_shapes=original.shapes,
        constants=ev.constants,
        evaluator=Evaluator(
            scorer=original.scorer,
            budget=original.budget,
            original=original.session,
            original_copy=original.copy,
            latency_feed=original.feed,
            latency_batch=original.batch_sizes[0],
            macs_by_op_type=original.figures["macs_by_op_type"],
            providers=run.providers,
            threads=run.threads,
            warmup=ev.warmup,
            latency_runs=ev.latency_runs,
            stage=stage,
            floor=ev.quality_floor,
        ),
    )
