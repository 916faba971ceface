"""The web's one door to the workers: tasks are sent by name, so the web never imports the
worker's code (the worker's tasks module registers them under these names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.models import Job
    from registry.models import ModelVersion

RUN_COMPRESSION_JOB = "jobs.run_compression_job"
CONVERT_MODEL_VERSION = "registry.convert_model_version"


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
