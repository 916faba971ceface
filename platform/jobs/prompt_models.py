"""Prompts typed on a language-model job's results page, answered on a worker by the job's
original and compressed models (jobrunner.prompts); jobs.prompts is the workflow around them.

Registered with the jobs app through jobs.models (Django loads models from there). State
changes are conditional UPDATEs like Job's: a duplicate delivery, a late worker and the
expiry of a forgotten prompt can never move a prompt out of a final state.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

# How many new tokens each model may generate for a typed prompt: a few sentences, a few
# seconds of a CPU worker for a small model.
PROMPT_MAX_NEW_TOKENS = 96
# A prompt still waiting this long after it was asked (its worker lost, or the queue held by
# long jobs) is failed, so its asker may ask again; its task expires in the broker then too.
PENDING_EXPIRY = timedelta(minutes=30)
EXPIRED = (
    "No worker answered within {minutes} minutes (the queue was busy with jobs, or the worker "
    "was lost); ask again."
)


class JobPrompt(models.Model):
    """One prompt a team member typed, answered by both models of a succeeded LLM job."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting for a worker"
        RUNNING = "running", "Answering"
        DONE = "done", "Answered"
        FAILED = "failed", "Failed"

    PENDING = (Status.QUEUED, Status.RUNNING)

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="prompts")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    prompt = models.TextField(help_text="As typed (stripped); the chat template is applied.")
    max_new_tokens = models.PositiveSmallIntegerField(default=PROMPT_MAX_NEW_TOKENS)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    original_answer = models.TextField(blank=True)
    compressed_answer = models.TextField(blank=True)
    original_tokens = models.PositiveIntegerField(null=True, blank=True)
    compressed_tokens = models.PositiveIntegerField(null=True, blank=True)
    original_tok_s = models.FloatField(null=True, blank=True, help_text="Decode tokens/s.")
    compressed_tok_s = models.FloatField(null=True, blank=True, help_text="Decode tokens/s.")
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["job", "-created_at"], name="jobs_prompt_job_created")]
        constraints = [
            # The abuse bound, kept by the database: two quick posts cannot both queue.
            models.UniqueConstraint(
                fields=["job", "user"],
                condition=Q(status__in=["queued", "running"]),
                name="jobs_one_pending_prompt_per_user",
            )
        ]

    def __str__(self) -> str:
        return f"{self.prompt[:40]} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status in self.PENDING

    def _move(self, sources: tuple[str, ...], **fields: Any) -> bool:
        moved = JobPrompt.objects.filter(pk=self.pk, status__in=sources).update(**fields) == 1
        if moved:
            for name, value in fields.items():
                setattr(self, name, value)
        return moved

    def claim(self, *, worker: str) -> bool:
        """queued -> running; False when it is not queued (a re-delivery, or expired)."""
        return self._move(
            (self.Status.QUEUED,),
            status=self.Status.RUNNING,
            started_at=timezone.now(),
            worker=worker[:200],
        )

    def answered(self, generation: Any) -> bool:
        """running -> done with both answers (a compress_engine Generation)."""
        return self._move(
            (self.Status.RUNNING,),
            status=self.Status.DONE,
            original_answer=generation.original,
            compressed_answer=generation.compressed,
            original_tokens=generation.original_tokens,
            compressed_tokens=generation.compressed_tokens,
            original_tok_s=generation.original_tok_s,
            compressed_tok_s=generation.compressed_tok_s,
            finished_at=timezone.now(),
        )

    def fail(self, error: str) -> bool:
        """queued or running -> failed; False once it is final."""
        return self._move(
            self.PENDING, status=self.Status.FAILED, error=error, finished_at=timezone.now()
        )

    @classmethod
    def expire_stale(cls, prompts: QuerySet[JobPrompt]) -> int:
        """Fail those of `prompts` pending for longer than PENDING_EXPIRY; how many."""
        now = timezone.now()
        message = EXPIRED.format(minutes=int(PENDING_EXPIRY.total_seconds() // 60))
        return prompts.filter(status__in=cls.PENDING, created_at__lt=now - PENDING_EXPIRY).update(
            status=cls.Status.FAILED, error=message, finished_at=now
        )
