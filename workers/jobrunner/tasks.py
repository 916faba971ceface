"""Thin Celery tasks: they take ids and hand over to the runner, which is the tested core."""

from __future__ import annotations

from jobrunner.celery_app import app


@app.task(bind=True, name="jobs.run_compression_job", acks_late=True, reject_on_worker_lost=True)
def run_compression_job(self, job_uuid: str) -> None:
    from jobrunner.runner import run_job

    run_job(job_uuid, task_id=self.request.id or "", worker=self.request.hostname or "")


@app.task(
    bind=True, name="registry.convert_model_version", acks_late=True, reject_on_worker_lost=True
)
def convert_model_version(self, version_uuid: str) -> None:
    """Convert an uploaded non-ONNX model to ONNX (registry.ingest is the tested core)."""
    from registry.ingest import convert_model_version as convert

    convert(version_uuid)
