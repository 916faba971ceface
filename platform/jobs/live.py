"""The live job page: planned stages, per-stage progress, an ETA and the log tail.

The worker reports one overall fraction (0..1) and a stage label; the engine maps each of
its stages onto a fixed slice of that fraction. The plan below rebuilds those slices from
the recipe, so the page can tell which stage is running and how far along it is, whatever
sub-label (a tuning trial, a TFLite conversion) the engine prints meanwhile.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from jobs.models import Job
from jobs.presenters import duration_text

# Bounds on what a run may write into its row (a long job reports thousands of times).
MAX_LOG_LINES = 200
MAX_TIMELINE_SAMPLES = 300
# Between two writes of the same stage; a new stage is always written at once.
WRITE_INTERVAL_S = 1.0
# The ETA needs this much signal from the current stage before it is shown.
ETA_MIN_SECONDS = 3.0
ETA_MIN_STAGE_PROGRESS = 0.05


@dataclass(frozen=True)
class PlannedStage:
    name: str
    lo: float  # overall job fraction where the stage starts
    hi: float  # ... and ends


def stage_plan(recipe_json: dict[str, Any]) -> tuple[PlannedStage, ...]:
    """The stages a job with this recipe goes through, as slices of its overall progress."""
    # Every status poll and every progress write needs the plan: parse each recipe once.
    return _stage_plan(json.dumps(recipe_json, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _stage_plan(recipe_text: str) -> tuple[PlannedStage, ...]:
    recipe_json = json.loads(recipe_text)
    # The slices live in the engine (api) and the runner; read from there, never copied, so
    # they cannot drift (tests/web/jobs/test_live_page.py checks a real run against them).
    from compress_engine import EngineError, Recipe
    from compress_engine import api as engine
    from compress_engine.passes import pass_for_step
    from jobrunner.runner import _ENGINE_END, _ENGINE_START

    def job(fraction: float) -> float:
        return _ENGINE_START + (_ENGINE_END - _ENGINE_START) * fraction

    try:
        recipe = Recipe.parse(recipe_json)
        titles = [pass_for_step(step).info.title for step in recipe.steps]
        tflite = "tflite" in recipe.export
    except EngineError:
        titles, tflite = ["Compression"], False
    span = (engine._VALIDATE - engine._PASSES) / len(titles)
    return (
        PlannedStage("Fetching the inputs", 0.0, _ENGINE_START),
        PlannedStage(
            "Measuring the original model", job(engine._MEASURE_ORIGINAL), job(engine._PASSES)
        ),
        *(
            PlannedStage(
                f"Step {i + 1}: {title}",
                job(engine._PASSES + i * span),
                job(engine._PASSES + (i + 1) * span),
            )
            for i, title in enumerate(titles)
        ),
        PlannedStage("Validating the result", job(engine._VALIDATE), job(engine._MEASURE_RESULT)),
        PlannedStage(
            "Measuring the compressed model", job(engine._MEASURE_RESULT), job(engine._EXPORT)
        ),
        PlannedStage(
            "Checking artifacts" + (" and converting to TFLite" if tflite else ""),
            job(engine._EXPORT),
            job(engine._WRITE),
        ),
        PlannedStage("Writing the report", job(engine._WRITE), _ENGINE_END),
        PlannedStage("Storing artifacts", _ENGINE_END, 1.0),
    )


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
    plan = stage_plan(job.recipe)
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
    plan = stage_plan(job.recipe)
    stage = plan[current_index(plan, job.progress)]
    seconds = stage_eta(job.timeline or [], stage, time.time() if now is None else now)
    if seconds is None:
        return "estimating…"
    return f"about {duration_text(seconds)} left in this stage"


def log_lines(job: Job, last: int = 50) -> list[str]:
    lines = job.log_tail.splitlines()
    return lines[-last:]


# --- written by the worker ---------------------------------------------------------------


def note_progress(job: Job, stage: str, fraction: float, *, at: datetime | None = None) -> bool:
    """Record a progress report of a running job in its log tail and timeline.

    The runner calls this from its engine progress callback, beside job.record_progress. A
    new stage is written at once (one log line); further reports of the same stage at most
    every WRITE_INTERVAL_S (a timeline sample, and a log line when the overall progress
    crosses a tenth). Returns True if something was written; a no-op once the job left
    `running`.
    """
    moment = at or timezone.now()
    now = moment.timestamp()
    last = getattr(job, "_live_note", None)  # (stage, time, decile) of the last write
    decile = int(fraction * 10)
    if last is not None and last[0] == stage and now - last[1] < WRITE_INTERVAL_S:
        return False
    clock = f"{timezone.localtime(moment):%H:%M:%S}"
    line = None
    if last is None or last[0] != stage:
        line = f"{clock}  {stage}"
    elif decile > last[2]:
        line = f"{clock}  {stage}: {round(fraction * 100)}% of the job"
    with transaction.atomic():
        # Row lock: the heartbeat thread and this callback must not overwrite each other.
        # Only while the job runs the attempt this worker claimed (Job.attempts fencing).
        this_run = Job.objects.filter(
            pk=job.pk, status=Job.Status.RUNNING, attempts=job.run_attempt
        )
        row = this_run.select_for_update().values("log_tail", "timeline").first()
        if row is None:
            return False
        timeline = [*(row["timeline"] or []), [round(now, 2), round(fraction, 5)]]
        fields: dict[str, Any] = {"timeline": timeline[-MAX_TIMELINE_SAMPLES:]}
        if line is not None:
            lines = [*row["log_tail"].splitlines(), line][-MAX_LOG_LINES:]
            fields["log_tail"] = "\n".join(lines)
        this_run.update(**fields)
    job._live_note = (stage, now, decile)  # type: ignore[attr-defined]
    return True
