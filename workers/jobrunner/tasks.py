"""Thin Celery tasks: they take ids and hand over to the runner, which is the tested core.

The web sends them by name (web.queue), so their names are defined there.
"""

from __future__ import annotations

from config.celery import app
from web.queue import (
    ANSWER_JOB_PROMPT,
    ANSWER_TIME_LIMIT_S,
    CONVERT_MODEL_VERSION,
    RUN_COMPRESSION_JOB,
)


@app.task(bind=True, name=RUN_COMPRESSION_JOB, acks_late=True, reject_on_worker_lost=True)
def run_compression_job(self, job_uuid: str) -> None:
    from jobrunner.runner import run_job

    run_job(job_uuid, task_id=self.request.id or "", worker=self.request.hostname or "")


@app.task(bind=True, name=CONVERT_MODEL_VERSION, acks_late=True, reject_on_worker_lost=True)
def convert_model_version(self, version_uuid: str) -> None:
    """Convert an uploaded non-ONNX model to ONNX (jobrunner.ingest is the tested core)."""
    from jobrunner.ingest import convert_model_version as convert

    convert(version_uuid)


@app.task(
    bind=True,
    name=ANSWER_JOB_PROMPT,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=ANSWER_TIME_LIMIT_S,
    time_limit=ANSWER_TIME_LIMIT_S + 30,
)
def answer_job_prompt(self, prompt_uuid: str) -> None:
    """Answer a prompt typed on an LLM job's results page with both of its models
    (jobrunner.prompts is the tested core)."""
    from jobrunner.prompts import answer_prompt

    answer_prompt(prompt_uuid, worker=self.request.hostname or "")
