"""Compression jobs, their artifacts, and worker heartbeats.

Job state changes happen only through the methods below. Each is a conditional UPDATE on
the current state, so a duplicate delivery, a late cancel or a reaper racing a worker can
never move a job backwards or out of a terminal state.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from accounts.models import Team
from registry.models import Dataset, ModelVersion, Project


class InvalidTransition(Exception):
    pass


class Job(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    # Bound on `training`: a 1000-epoch run with recovery steps stays a few hundred kB.
    MAX_TRAINING_POINTS = 2000
    # The whole state machine: from-state -> states it may move to.
    TRANSITIONS: dict[str, frozenset[str]] = {
        Status.QUEUED: frozenset({Status.RUNNING, Status.FAILED, Status.CANCELLED}),
        Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
        Status.SUCCEEDED: frozenset(),
        Status.FAILED: frozenset(),
        Status.CANCELLED: frozenset(),
    }

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="jobs")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="jobs")
    dataset = models.ForeignKey(
        Dataset,
        on_delete=models.PROTECT,
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
        "jobs.live.MAX_LOG_LINES; written by the worker while the job runs.",
    )
    timeline = models.JSONField(
        default=list,
        blank=True,
        help_text="Recent [unix time, progress] samples of the running job, bounded by "
        "jobs.live.MAX_TIMELINE_SAMPLES: the rate behind the live page's ETA.",
    )
    celery_task_id = models.CharField(max_length=64, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
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

    def _transition(self, to: str, **fields: Any) -> bool:
        """Move to `to` if the row is still in a state that allows it. Returns True if moved."""
        sources = [s for s, targets in self.TRANSITIONS.items() if to in targets]
        if not sources:
            raise InvalidTransition(f"no state may move to {to}")
        moved = Job.objects.filter(pk=self.pk, status__in=sources).update(status=to, **fields)
        self.refresh_from_db()
        return moved == 1

    def claim(self, *, worker: str, task_id: str = "") -> bool:
        """queued -> running, for exactly one worker."""
        now = timezone.now()
        fields: dict[str, Any] = {"started_at": now, "heartbeat_at": now, "worker": worker[:200]}
        if task_id:
            fields["celery_task_id"] = task_id
        moved = Job.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, **fields
        )
        self.refresh_from_db()
        return moved == 1

    def record_progress(self, stage: str, fraction: float) -> None:
        """Progress and heartbeat of a running job; a no-op once the job left `running`."""
        Job.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            stage=stage[:200],
            progress=min(max(fraction, 0.0), 1.0),
            heartbeat_at=timezone.now(),
        )

    def record_training(self, point: dict[str, Any]) -> bool:
        """Append one training point (an epoch) while the job is running; returns True if kept.

        A no-op once the job left `running`, and for a point identical to the last one (a
        repeated call). Only the newest MAX_TRAINING_POINTS are kept, so a long run cannot grow
        the row without bound.
        """
        with transaction.atomic():
            # Row lock: two writers (say, a retried callback) must not lose each other's point.
            current = (
                Job.objects.select_for_update()
                .filter(pk=self.pk, status=self.Status.RUNNING)
                .values_list("training", flat=True)
                .first()
            )
            if current is None:
                return False
            points = list(current or [])
            if points and points[-1] == point:
                return False
            points = [*points, point][-self.MAX_TRAINING_POINTS :]
            Job.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
                training=points, heartbeat_at=timezone.now()
            )
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
    def reap_stale(cls, older_than: timedelta) -> int:
        """Fail running jobs whose worker stopped sending heartbeats."""
        cutoff = timezone.now() - older_than
        return cls.objects.filter(status=cls.Status.RUNNING, heartbeat_at__lt=cutoff).update(
            status=cls.Status.FAILED,
            error="Worker lost: the job stopped sending heartbeats (the worker died or was "
            "killed). Start the job again.",
            finished_at=timezone.now(),
        )


def _artifact_upload_to(instance: Artifact, filename: str) -> str:
    return f"artifacts/{instance.job.team.uuid}/{instance.job.uuid}/{filename}"


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
    because the filesystem broker has no broadcast (no celery ping)."""

    hostname = models.CharField(max_length=200, unique=True)
    queues = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.hostname

    @classmethod
    def beat(cls, hostname: str, *, queues: str = "", device: str = "") -> None:
        cls.objects.update_or_create(
            hostname=hostname,
            defaults={"last_seen": timezone.now(), "queues": queues, "device": device},
        )

    @classmethod
    def alive(cls) -> models.QuerySet[WorkerHeartbeat]:
        cutoff = timezone.now() - timedelta(seconds=settings.MODELPRESS_WORKER_STALE_SECONDS)
        return cls.objects.filter(last_seen__gte=cutoff)
