"""Thin Celery tasks: they take ids and hand over to the runner, which is the tested core."""

from __future__ import annotations

from jobrunner.celery_app import app


@app.task(bind=True, name="jobs.run_compression_job", acks_late=True, reject_on_worker_lost=True)
def run_compression_job(self, job_uuid: str) -> None:
    from jobrunner.runner import run_job

    run_job(job_uuid, task_id=self.request.id or "", worker=self.request.hostname or "")
