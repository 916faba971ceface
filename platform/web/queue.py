"""The web's one door to the workers: tasks are sent by name, so the web never imports the
worker's code (the worker's tasks module registers them under these names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import timedelta

    from jobs.models import Job, JobPrompt
    from registry.models import ModelVersion

RUN_COMPRESSION_JOB = "jobs.run_compression_job"
CONVERT_MODEL_VERSION = "registry.convert_model_version"
ANSWER_JOB_PROMPT = "jobs.answer_job_prompt"
# That task's soft time limit (the hard one comes 30 s later): loading two models and
# generating a few sentences with each takes seconds for the models it serves.
ANSWER_TIME_LIMIT_S = 300


def send_compression_job(job: Job) -> None:
    """Queue a job's run on its queue, under its celery_task_id (recorded when it is created)."""
    from config.celery import app

    app.send_task(
        RUN_COMPRESSION_JOB, args=[str(job.uuid)], task_id=job.celery_task_id, queue=job.queue
    )


def send_model_conversion(version: ModelVersion) -> None:
    """Queue the conversion of an uploaded non-ONNX model on the convert queue, which a
    worker of its own serves: a conversion never waits behind compression jobs."""
    from django.conf import settings

    from config.celery import app

    app.send_task(
        CONVERT_MODEL_VERSION, args=[str(version.uuid)], queue=settings.MODELPRESS_CONVERT_QUEUE
    )


def send_job_prompt(prompt: JobPrompt, *, queue: str, expires: timedelta) -> None:
    """Queue the answering of a typed prompt on `queue`; the broker drops it after `expires`
    (by then the prompt has been failed as unanswered, jobs.prompt_models.PENDING_EXPIRY)."""
    from config.celery import app

    app.send_task(
        ANSWER_JOB_PROMPT,
        args=[str(prompt.uuid)],
        queue=queue,
        expires=expires.total_seconds(),
    )
