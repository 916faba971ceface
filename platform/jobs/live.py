"""The live job page: planned stages, per-stage progress, an ETA and the log tail.

The worker reports one overall fraction (0..1) and a stage label; the engine maps each of
its stages onto a fixed slice of its own progress (compress_engine.stage_plan), which the
worker places between fetching the inputs and storing the artifacts (jobs.progress). The plan
below is the engine's, placed the same way, so the page can tell which stage is running and
how far along it is, whatever sub-label (a tuning trial, a TFLite conversion) the engine
prints meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from compress_engine import EngineError
from compress_engine import stage_plan as engine_stage_plan
from compress_engine.configs import Recipe
from jobs.models import Job
from jobs.presenters import duration_text
from jobs.progress import ENGINE_END, ENGINE_START

# The ETA needs this much signal from the current stage before it is shown.
ETA_MIN_SECONDS = 3.0
ETA_MIN_STAGE_PROGRESS = 0.05


@dataclass(frozen=True)
class PlannedStage:
    name: str
    lo: float  # overall job fraction where the stage starts
    hi: float  # ... and ends


def stage_plan(recipe: Recipe | None) -> tuple[PlannedStage, ...]:
    """The stages a job with this recipe goes through, as slices of its overall progress;
    None (a stored recipe this engine no longer reads) plans one generic step."""

    def job(fraction: float) -> float:
        return ENGINE_START + (ENGINE_END - ENGINE_START) * fraction

    return (
        PlannedStage("Fetching the inputs", 0.0, ENGINE_START),
        *(PlannedStage(s.name, job(s.lo), job(s.hi)) for s in engine_stage_plan(recipe)),
        PlannedStage("Storing artifacts", ENGINE_END, 1.0),
    )


def job_plan(job: Job) -> tuple[PlannedStage, ...]:
    """stage_plan of the job's own recipe."""
    try:
        recipe = job.recipe_obj
    except EngineError:
        recipe = None
    return stage_plan(recipe)


def current_index(plan: Sequence[PlannedStage], progress: float) -> int:
    """Index of the stage that `progress` falls in (a stage owns [lo, hi))."""
    for i, stage in enumerate(plan):
        if progress < stage.hi:
            return i
    return len(plan) - 1


@dataclass(frozen=True)
class StageRow:
    name: str
    state: str  # done | running | pending | failed | cancelled | waiting
    percent: int
    detail: str  # the worker's own label while it runs


def stage_rows(job: Job) -> list[StageRow]:
    plan = job_plan(job)
    if job.status == Job.Status.SUCCEEDED:
        return [StageRow(s.name, "done", 100, "") for s in plan]
    if job.status == Job.Status.QUEUED or (
        job.status == Job.Status.CANCELLED and job.started_at is None
    ):
        state = "waiting" if job.status == Job.Status.QUEUED else "pending"
        return [StageRow(s.name, state if i == 0 else "pending", 0, "") for i, s in enumerate(plan)]
    now = current_index(plan, job.progress)
    ended = {Job.Status.FAILED: "failed", Job.Status.CANCELLED: "cancelled"}.get(job.status)
    rows = []
    for i, s in enumerate(plan):
        if i < now:
            rows.append(StageRow(s.name, "done", 100, ""))
        elif i == now:
            rows.append(
                StageRow(
                    s.name,
                    ended or "running",
                    round(100 * _within(s, job.progress)),
                    "" if ended or job.stage == s.name else job.stage,
                )
            )
        else:
            rows.append(StageRow(s.name, "pending", 0, ""))
    return rows


def _within(stage: PlannedStage, progress: float) -> float:
    if stage.hi <= stage.lo:
        return 1.0
    return min(max((progress - stage.lo) / (stage.hi - stage.lo), 0.0), 1.0)


def stage_eta(samples: Sequence[Sequence[float]], stage: PlannedStage, now: float) -> float | None:
    """Seconds left in `stage`, from the rate its progress has moved at; None until there is
    enough signal (a few seconds and a few percent of the stage), or when it stalled.

    `samples` are [unix time, overall progress] pairs, oldest first.
    """
    inside = [(t, p) for t, p in samples if stage.lo <= p <= stage.hi]
    if len(inside) < 2:
        return None
    (t0, p0), (t1, p1) = inside[0], inside[-1]
    moved = (p1 - p0) / (stage.hi - stage.lo) if stage.hi > stage.lo else 0.0
    if t1 - t0 < ETA_MIN_SECONDS or moved < ETA_MIN_STAGE_PROGRESS:
        return None
    rate = (p1 - p0) / (t1 - t0)
    # Time already spent since the last report counts against what is left.
    return max((stage.hi - p1) / rate - (now - t1), 0.0)


def eta_text(job: Job, now: float | None = None) -> str | None:
    """ "about 2 min 10 s left in this stage", "estimating…", or None when not running."""
    if job.status != Job.Status.RUNNING:
        return None
    plan = job_plan(job)
    stage = plan[current_index(plan, job.progress)]
    seconds = stage_eta(job.timeline or [], stage, time.time() if now is None else now)
    if seconds is None:
        return "estimating…"
    return f"about {duration_text(seconds)} left in this stage"


def log_lines(job: Job, last: int = 50) -> list[str]:
    lines = job.log_tail.splitlines()
    return lines[-last:]
