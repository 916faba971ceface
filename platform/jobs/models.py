"""Compression jobs, their artifacts, and worker heartbeats.

Job state changes happen only through the methods below. Each is a conditional UPDATE on
the current state, so a duplicate delivery, a late cancel or a reaper racing a worker can
never move a job backwards or out of a terminal state.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Team
from jobs.progress import MAX_LOG_LINES, MAX_TIMELINE_SAMPLES, WRITE_INTERVAL_S
from registry.models import Dataset, ModelVersion, Project

if TYPE_CHECKING:
    from compress_engine.configs import Recipe


class InvalidTransition(Exception):
    pass


WORKER_LOST = (
    "Worker lost: the job stopped sending heartbeats (its worker died or was killed) on each "
    "of its {runs} runs, so it was not re-queued again. Start the job again; if it keeps "
    "happening, the job may be too big for the worker (memory or time limits)."
)


@dataclass
class Reaped:
    """What Job.reap_stale did with the running jobs whose heartbeat stopped."""

    requeued: list[Job] = field(default_factory=list)
    failed: int = 0
    cancelled: int = 0


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    # Runs a job gets when its worker is lost: the reaper re-queues it once, then fails it.
    MAX_ATTEMPTS = 2
    # Bound on `training`: a 1000-epoch run with recovery steps stays a few hundred kB.
    MAX_TRAINING_POINTS = 2000
    # The whole state machine: from-state -> states it may move to.
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED}),
        # back to queued only through reap_stale, when the worker running it was lost
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
        Status.SUCCEEDED: frozenset(),
        Status.FAILED: frozenset(),
        Status.CANCELLED: frozenset(),
    }

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="jobs")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="jobs")
    # RESTRICT, not PROTECT: a dataset that jobs used cannot be deleted on its own, but goes
    # with them when its project or team is deleted (PROTECT refused even that).
    dataset = models.ForeignKey(
        Dataset,
        on_delete=models.RESTRICT,
        null=True,
        blank=True,
        related_name="jobs",
        help_text="Calibration/evaluation samples, split by the recipe with a fixed seed.",
    )
    recipe = models.JSONField(help_text="The engine recipe (compress_engine.Recipe) as JSON.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=200, blank=True)
    progress = models.FloatField(default=0.0, help_text="0..1 within the whole job.")
    error = models.TextField(blank=True)
    report = models.JSONField(null=True, blank=True)
    training = models.JSONField(
        default=list,
        blank=True,
        help_text="Per-epoch points (compress_engine TrainingPoint) of distill/finetune steps, "
        "recorded while the job runs: the live training curve.",
    )
    log_tail = models.TextField(
        blank=True,
        help_text="The newest lines of the run's log (stage changes, progress), bounded by "
        "jobs.progress.MAX_LOG_LINES; written by the worker while the job runs.",
    )
    timeline = models.JSONField(
        default=list,
        blank=True,
        help_text="Recent [unix time, progress] samples of the running job, bounded by "
        "jobs.progress.MAX_TIMELINE_SAMPLES: the rate behind the live page's ETA.",
    )
    celery_task_id = models.CharField(max_length=64, blank=True)
    queue = models.CharField(
        max_length=200,
        blank=True,
        help_text="The Celery queue the job was sent to (jobs.routing decides, from the recipe).",
    )
    worker = models.CharField(max_length=200, blank=True)
    device = models.CharField(
        max_length=300,
        blank=True,
        help_text="The hardware of the worker that ran the job (compress_engine WorkerDevice).",
    )
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="How many times a worker claimed the job. A job whose worker was lost is "
        "re-queued while this is below Job.MAX_ATTEMPTS, then failed. Worker-side writes are "
        "fenced on it, so a worker that lost its claim cannot touch a newer run.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"Job {self.uuid} ({self.status})"

    @property
    def recipe_obj(self) -> Recipe:
        """The recipe as the engine's typed Recipe (the row stores its JSON), parsed once
        per instance and again only if `recipe` is replaced. Raises EngineError for a
        stored recipe this engine version no longer accepts."""
        from compress_engine.configs import Recipe

        cached = self.__dict__.get("_recipe_obj")
        if cached is None or cached[0] is not self.recipe:
            cached = (self.recipe, Recipe.parse(self.recipe))
            self.__dict__["_recipe_obj"] = cached
        return cached[1]

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def percent(self) -> int:
        return round(self.progress * 100)

    def _transition(self, to: str, *, any_attempt: bool = False, **fields: Any) -> bool:
        """Move to `to` if the row is still in a state that allows it. Returns True if moved.

        Unless `any_attempt`, the row must also still be on this instance's attempt: a worker
        whose job was re-queued behind its back (and claimed again) cannot finish it.
        """
        sources = [s for s, targets in self.TRANSITIONS.items() if to in targets]
        if not sources:
            raise InvalidTransition(f"no state may move to {to}")
        rows = Job.objects.filter(pk=self.pk, status__in=sources)
        if not any_attempt:
            rows = rows.filter(attempts=self.run_attempt)
        moved = rows.update(status=to, **fields)
        self.refresh_from_db()
        return moved == 1

    @property
    def run_attempt(self) -> int:
        """The attempt this instance speaks for: the one it claimed (kept when a refresh shows
        a newer one), else the row's as loaded. Worker-side writes are fenced on it."""
        return self.__dict__.get("_claimed_attempt", self.attempts)

    def _this_run(self) -> models.QuerySet[Job]:
        """The row while it is running the attempt this instance claimed."""
        return Job.objects.filter(pk=self.pk, status=self.Status.RUNNING, attempts=self.run_attempt)

    def claim(self, *, worker: str, task_id: str = "", device: str = "") -> bool:
        """queued -> running, for exactly one worker (recorded with its hardware); counts the
        attempt. A running job is never claimed: a duplicate or re-delivered message does
        nothing, and a job whose worker died is re-queued by reap_stale instead."""
        now = timezone.now()
        fields: dict[str, Any] = {
            "attempts": F("attempts") + 1,
            "started_at": now,
            "heartbeat_at": now,
            "worker": worker[:200],
            "device": device[:300],
        }
        if task_id:
            fields["celery_task_id"] = task_id
        moved = Job.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, **fields
        )
        self.refresh_from_db()
        if moved:
            self._claimed_attempt = self.attempts
        return moved == 1

    def record_progress(self, stage: str, fraction: float) -> None:
        """Progress and heartbeat of a running job; a no-op once the job left `running`."""
        self._this_run().update(
            stage=stage[:200],
            progress=min(max(fraction, 0.0), 1.0),
            heartbeat_at=timezone.now(),
        )

    def note_progress(self, stage: str, fraction: float, *, at: datetime | None = None) -> bool:
        """Record a progress report of a running job in its log tail and timeline (the live
        page's), beside record_progress.

        A new stage is written at once (one log line); further reports of the same stage at
        most every WRITE_INTERVAL_S (a timeline sample, and a log line when the overall
        progress crosses a tenth). Returns True if something was written; a no-op once the
        job left `running`.
        """
        moment = at or timezone.now()
        now = moment.timestamp()
        last = getattr(self, "_live_note", None)  # (stage, time, decile) of the last write
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
            # Only while the job runs the attempt this worker claimed (attempts fencing).
            row = self._this_run().select_for_update().values("log_tail", "timeline").first()
            if row is None:
                return False
            timeline = [*(row["timeline"] or []), [round(now, 2), round(fraction, 5)]]
            fields: dict[str, Any] = {"timeline": timeline[-MAX_TIMELINE_SAMPLES:]}
            if line is not None:
                lines = [*row["log_tail"].splitlines(), line][-MAX_LOG_LINES:]
                fields["log_tail"] = "\n".join(lines)
            self._this_run().update(**fields)
        self._live_note = (stage, now, decile)
        return True

    def record_training(self, point: dict[str, Any]) -> bool:
        """Append one training point (an epoch) while the job is running; returns True if kept.

        A no-op once the job left `running`, and for a point identical to the last one (a
        repeated call). Only the newest MAX_TRAINING_POINTS are kept, so a long run cannot grow
        the row without bound.
        """
        with transaction.atomic():
            # Row lock: two writers (say, a retried callback) must not lose each other's point.
            current = (
                self._this_run().select_for_update().values_list("training", flat=True).first()
            )
            if current is None:
                return False
            points = list(current or [])
            if points and points[-1] == point:
                return False
            points = [*points, point][-self.MAX_TRAINING_POINTS :]
            self._this_run().update(training=points, heartbeat_at=timezone.now())
        self.training = points
        return True

    def succeed(self, report: dict[str, Any]) -> bool:
        return self._transition(
            self.Status.SUCCEEDED,
            report=report,
            progress=1.0,
            stage="Done",
            finished_at=timezone.now(),
        )

    def fail(self, error: str) -> bool:
        return self._transition(self.Status.FAILED, error=error, finished_at=timezone.now())

    def cancel(self) -> bool:
        """A queued job is cancelled at once; a running one is flagged for its worker to stop."""
        if Job.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(cancel_requested=True):
            self.refresh_from_db()
            return True
        return self._transition(
            self.Status.CANCELLED,
            any_attempt=True,  # the user's cancel, not a worker's
            cancel_requested=True,
            stage="Cancelled",
            finished_at=timezone.now(),
        )

    def mark_cancelled(self) -> bool:
        """Called by the worker once it has stopped a running job whose cancel was requested."""
        return self._transition(
            self.Status.CANCELLED, stage="Cancelled", finished_at=timezone.now()
        )

    def is_cancel_requested(self) -> bool:
        return Job.objects.filter(pk=self.pk, cancel_requested=True).exists()

    @classmethod
    def reap_stale(cls, older_than: timedelta) -> Reaped:
        """Running jobs whose worker stopped sending heartbeats (it died, was killed, lost its
        machine): each is re-queued once, then failed with "Worker lost"; one the user asked
        to cancel is cancelled.

        Re-queued jobs are back in `queued` with their progress reset; the caller sends them
        to a worker (jobs.services.reap_stale_jobs). Every update repeats its conditions, so
        the reapers of several workers running at once act on a job once.
        """
        now = timezone.now()
        cutoff = now - older_than
        stale = cls.objects.filter(status=cls.Status.RUNNING, heartbeat_at__lt=cutoff)
        reaped = Reaped()
        reaped.cancelled = stale.filter(cancel_requested=True).update(
            status=cls.Status.CANCELLED, stage="Cancelled", finished_at=now
        )
        reaped.failed = stale.filter(attempts__gte=cls.MAX_ATTEMPTS).update(
            status=cls.Status.FAILED,
            error=WORKER_LOST.format(runs=cls.MAX_ATTEMPTS),
            finished_at=now,
        )
        clock = f"{timezone.localtime(now):%H:%M:%S}"
        for pk, attempts, log_tail in stale.values_list("pk", "attempts", "log_tail"):
            note = (
                f"{clock}  Worker lost (no heartbeat for {older_than.total_seconds():g} s): "
                f"re-queued for run {attempts + 1} of {cls.MAX_ATTEMPTS}"
            )
            moved = stale.filter(pk=pk, attempts=attempts).update(
                status=cls.Status.QUEUED,
                stage="Waiting for a worker (re-queued: its worker was lost)",
                progress=0.0,
                training=[],
                timeline=[],
                log_tail=f"{log_tail}\n{note}".strip(),
                worker="",
                device="",
                started_at=None,
                heartbeat_at=None,
            )
            if moved:
                reaped.requeued.append(cls.objects.get(pk=pk))
        return reaped


def artifact_folder(job: Job) -> str:
    """The storage folder of a job's artifacts; nothing else is stored in it."""
    return f"artifacts/{job.team.uuid}/{job.uuid}"


def _artifact_upload_to(instance: Artifact, filename: str) -> str:
    return f"{artifact_folder(instance.job)}/{filename}"


class Artifact(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=32)
    precision = models.CharField(max_length=32, blank=True)
    file = models.FileField(upload_to=_artifact_upload_to, max_length=300)
    size_bytes = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class WorkerHeartbeat(models.Model):
    """One row per worker process, refreshed periodically; /healthz reads worker liveness here
    because the filesystem broker has no broadcast (no celery ping). Job routing reads the
    hardware fields: a job that trains goes to the gpu queue only while a live worker with a
    CUDA device consumes it."""

    hostname = models.CharField(max_length=200, unique=True)
    queues = models.CharField(max_length=200, blank=True, help_text="Consumed queues, a,b,c.")
    device = models.CharField(max_length=300, blank=True, help_text="One-line description.")
    cuda_device = models.CharField(
        max_length=200, blank=True, help_text="Name of CUDA device 0; empty without a GPU."
    )
    cuda_device_count = models.PositiveIntegerField(default=0)
    cuda_memory_bytes = models.BigIntegerField(default=0, help_text="Total memory of device 0.")
    cpu_cores = models.PositiveIntegerField(default=0)
    providers = models.CharField(
        max_length=300, blank=True, help_text="Usable ONNX Runtime execution providers, a,b."
    )
    cannot_convert = models.CharField(
        max_length=500,
        blank=True,
        help_text="What this worker cannot convert or run for want of a package, checked at "
        "start: 'torch-export (onnxscript missing); ...'.",
    )
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.hostname

    @property
    def queue_names(self) -> list[str]:
        return [q for q in self.queues.split(",") if q]

    @classmethod
    def beat(
        cls,
        hostname: str,
        *,
        queues: str = "",
        device: str = "",
        cuda_device: str = "",
        cuda_device_count: int = 0,
        cuda_memory_bytes: int = 0,
        cpu_cores: int = 0,
        providers: str = "",
        cannot_convert: str = "",
    ) -> None:
        cls.objects.update_or_create(
            hostname=hostname,
            defaults={
                "cannot_convert": cannot_convert[:500],
                "last_seen": timezone.now(),
                "queues": queues[:200],
                "device": device[:300],
                "cuda_device": cuda_device[:200],
                "cuda_device_count": cuda_device_count,
                "cuda_memory_bytes": cuda_memory_bytes,
                "cpu_cores": cpu_cores,
                "providers": providers[:300],
            },
        )

    @classmethod
    def alive(cls) -> models.QuerySet[WorkerHeartbeat]:
        cutoff = timezone.now() - timedelta(seconds=settings.MODELPRESS_WORKER_STALE_SECONDS)
        return cls.objects.filter(last_seen__gte=cutoff)


# Defined in a module of its own (this one is long); imported here so the app registers it.
from jobs.prompt_models import JobPrompt  # noqa: E402, F401
