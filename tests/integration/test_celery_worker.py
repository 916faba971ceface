"""A real `celery worker` process on the local Redis, against the test PostgreSQL database."""

from __future__ import annotations

from io import BytesIO

import pytest

from conftest import wait_for_job
from jobs.models import WorkerHeartbeat
from jobs.services import create_job

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _replace_stored_file(version, content: bytes) -> None:
    storage = version.file.storage
    storage.delete(version.file.name)
    storage.save(version.file.name, BytesIO(content))


def test_it_runs_a_job_through_redis_and_keeps_serving_after_a_failure(
    worker, model_version, owner, fast_recipe, settings
):
    good_bytes = model_version.file.storage.open(model_version.file.name, "rb").read()

    # A stored model the engine cannot read: the job fails with a message...
    _replace_stored_file(model_version, b"not onnx")
    failed = wait_for_job(
        create_job(model_version=model_version, user=owner.user, recipe=fast_recipe)
    )
    assert failed.status == "failed"
    assert failed.error and failed.worker == worker.hostname

    # ...and the same worker then runs a good job to completion.
    _replace_stored_file(model_version, good_bytes)
    job = wait_for_job(create_job(model_version=model_version, user=owner.user, recipe=fast_recipe))
    assert job.status == "succeeded", job.error + "\n" + worker.log()
    assert job.celery_task_id and job.artifacts.count() == 1
    assert WorkerHeartbeat.alive().filter(hostname=worker.hostname).exists()
    # No GPU worker here: the job went to the cpu queue, the one this worker reads.
    assert job.queue == settings.MODELPRESS_CPU_QUEUE
    assert job.device == WorkerHeartbeat.objects.get(hostname=worker.hostname).device != ""


def test_it_advertises_the_queues_it_reads_and_its_hardware(worker, settings):
    from compress_engine.device import cuda_devices

    row = WorkerHeartbeat.alive().get(hostname=worker.hostname)
    # Only the -Q queues (the fixture's run-own job and convert queues), not every queue the
    # app knows.
    assert sorted(row.queue_names) == sorted(
        [settings.CELERY_TASK_DEFAULT_QUEUE, settings.MODELPRESS_CONVERT_QUEUE]
    )
    assert row.cpu_cores > 0 and "cores" in row.device
    assert (row.cuda_device != "") == bool(cuda_devices())


def test_it_reports_the_worker_alive_on_healthz(worker, client):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    assert worker.hostname in response.json()["checks"]["workers"]["alive"]


def test_it_cancels_a_job_whether_or_not_the_worker_has_picked_it_up(
    worker, model_version, owner, fast_recipe
):
    recipe = {**fast_recipe, "evaluate": {**fast_recipe["evaluate"], "latency_runs": 2000}}
    job = create_job(model_version=model_version, user=owner.user, recipe=recipe)
    assert job.cancel()
    job = wait_for_job(job)
    assert job.status == "cancelled"
    assert job.artifacts.count() == 0
