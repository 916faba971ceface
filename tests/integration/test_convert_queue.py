"""Conversions have a queue of their own: a real `celery worker` on the local Redis that reads
only the convert queue converts a TorchScript upload while the job queue, holding a job ahead
of it, has no worker at all."""

from __future__ import annotations

import time
import uuid

import pytest

from conftest import _ingest, start_worker, stop_process, wait_for_heartbeat

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _wait_converted(version, worker, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version.refresh_from_db()
        if not version.is_converting:
            return version
        time.sleep(0.5)
    raise AssertionError(f"still converting after {timeout} s:\n{worker.log()}")


def test_a_convert_only_worker_converts_while_the_job_queue_is_unserved(
    model_version, project, owner, fast_recipe, torch_model_files, settings, tmp_path
):
    import redis

    from jobs.services import create_job
    from registry.services import ingest_model_upload
    from web.queue_position import job_position

    suffix = uuid.uuid4().hex[:8]
    convert_queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-convert-{suffix}"
    job_queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-unserved-{suffix}"
    settings.MODELPRESS_CONVERT_QUEUE = convert_queue
    settings.MODELPRESS_CPU_QUEUE = job_queue  # create_job routes there: nobody reads it
    worker = start_worker(
        tmp_path / "convert-worker.log",
        queues=convert_queue,
        env={"MODELPRESS_CONVERT_QUEUE": convert_queue, "MODELPRESS_CPU_QUEUE": job_queue},
    )
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        wait_for_heartbeat(worker, timeout=90)
        job = create_job(model_version=model_version, user=owner.user, recipe=fast_recipe)
        assert job.queue == job_queue

        version = _ingest(
            lambda **kw: ingest_model_upload(**kw, input_shapes="1x3x16x16"),
            project,
            owner,
            torch_model_files["torchscript"],
        )
        assert version.is_converting

        version = _wait_converted(version, worker)
        assert version.status == "ready", version.status_message + "\n" + worker.log()
        assert [t["name"] for t in version.inputs] == ["input"]
        # The job, sent first, still waits on its own queue: nothing took it.
        job.refresh_from_db()
        assert job.status == "queued" and broker.llen(job_queue) == 1
        assert job_position(job).text == f"1st in the {job_queue} queue, next to start"
    finally:
        stop_process(worker.process)
        broker.delete(job_queue, convert_queue)
        broker.close()
