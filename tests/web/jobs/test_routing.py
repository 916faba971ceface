"""Queue routing: recipes that train go to the gpu queue while a live CUDA worker reads it;
everything else, and training without such a worker, goes to the cpu queue."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from compress_engine import Recipe, training_steps
from jobs.models import Job, WorkerHeartbeat
from jobs.routing import choose_queue, gpu_workers
from jobs.services import create_job

pytestmark = pytest.mark.django_db

FAST = {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8}
DISTILL = Recipe.parse({"version": 1, "steps": [{"distill": {"epochs": 1}}], "evaluate": FAST})
DYNAMIC_INT8 = Recipe.parse(
    {"version": 1, "steps": [{"quantize": {"mode": "dynamic-int8"}}], "evaluate": FAST}
)


def _steps(*steps: dict) -> dict:
    return {"version": 1, "steps": list(steps)}


@pytest.fixture
def gpu_queue(settings) -> str:
    return settings.MODELPRESS_GPU_QUEUE


@pytest.fixture
def cpu_queue(settings) -> str:
    return settings.MODELPRESS_CPU_QUEUE


def _gpu_worker(queues: str, *, cuda_device: str = "NVIDIA H100 80GB HBM3", age_s: float = 0):
    WorkerHeartbeat.beat(
        "gpu-worker@host",
        queues=queues,
        device=f"{cuda_device} (80 GiB); AMD EPYC 9654 (16 cores)",
        cuda_device=cuda_device,
        cuda_device_count=1 if cuda_device else 0,
        cuda_memory_bytes=80 * 1024**3 if cuda_device else 0,
        cpu_cores=16,
        providers="CUDAExecutionProvider,CPUExecutionProvider",
    )
    if age_s:
        WorkerHeartbeat.objects.filter(hostname="gpu-worker@host").update(
            last_seen=timezone.now() - timedelta(seconds=age_s)
        )


# --- which steps train ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "kinds"),
    [
        (DISTILL, ["distill"]),
        (_steps({"finetune": {"epochs": 1}}), ["finetune"]),
        (_steps({"prune": {"amount": 0.5}}, {"distill": {}}, {"quantize": {}}), ["distill"]),
        (_steps({"prune": {"iterations": 3, "recover_epochs": 2}}), ["prune"]),
        # One-shot pruning, taylor scoring (a few backward passes) and recovery of 0 epochs
        # do not train.
        (_steps({"prune": {"amount": 0.5}}), []),
        (_steps({"prune": {"importance": "taylor"}}), []),
        (_steps({"prune": {"iterations": 3, "recover_epochs": 0}}), []),
        (_steps({"prune": {"method": "magnitude", "amount": 0.5}}), []),
        (DYNAMIC_INT8, []),
        (_steps({"quantize": {"mode": "static-int8"}}), []),
        (_steps({"quantize": {"mode": "fp16"}}), []),
    ],
)
def test_it_knows_which_steps_train(recipe, kinds):
    assert training_steps(Recipe.parse(recipe)) == kinds


# --- the rule ---------------------------------------------------------------------------------


def test_it_sends_distillation_to_cpu_when_no_gpu_worker_is_registered(cpu_queue):
    WorkerHeartbeat.beat("cpu-worker@host", queues=cpu_queue, cpu_cores=2)
    assert choose_queue(DISTILL) == cpu_queue


def test_it_sends_distillation_to_a_live_gpu_worker_and_int8_to_cpu(gpu_queue, cpu_queue):
    _gpu_worker(f"{cpu_queue},{gpu_queue}")
    assert [w.hostname for w in gpu_workers()] == ["gpu-worker@host"]
    assert choose_queue(DISTILL) == gpu_queue
    assert choose_queue(DYNAMIC_INT8) == cpu_queue


def test_it_ignores_a_stale_gpu_heartbeat(gpu_queue, cpu_queue, settings):
    _gpu_worker(gpu_queue, age_s=settings.MODELPRESS_WORKER_STALE_SECONDS + 5)
    assert gpu_workers() == []
    assert choose_queue(DISTILL) == cpu_queue


def test_it_needs_both_the_gpu_queue_and_a_cuda_device(gpu_queue, cpu_queue):
    _gpu_worker(cpu_queue)  # a GPU machine that only reads the cpu queue
    assert choose_queue(DISTILL) == cpu_queue
    _gpu_worker(gpu_queue, cuda_device="")  # reads gpu but has no GPU (misconfigured)
    assert choose_queue(DISTILL) == cpu_queue
    # A queue whose name merely contains the gpu queue's is another queue.
    _gpu_worker(f"{gpu_queue}-old")
    assert choose_queue(DISTILL) == cpu_queue


def test_it_reads_the_queue_names_from_settings(settings):
    settings.MODELPRESS_CPU_QUEUE, settings.MODELPRESS_GPU_QUEUE = "small", "big"
    _gpu_worker("big")
    assert (choose_queue(DISTILL), choose_queue(DYNAMIC_INT8)) == ("big", "small")


# --- create_job, retry: the queue is stored and used ------------------------------------------


@pytest.fixture
def purged_gpu_queue(gpu_queue) -> Iterator[str]:
    """The run's own gpu queue on the test Redis, empty before and after the test (no worker
    of the test run reads it)."""
    from config.celery import app

    def purge() -> None:
        with app.connection_for_write() as conn, conn.SimpleQueue(gpu_queue) as queue:
            queue.clear()

    purge()
    yield gpu_queue
    purge()


def test_it_puts_the_task_on_the_queue_it_records(
    owner, model_version, dataset, cpu_queue, purged_gpu_queue, django_capture_on_commit_callbacks
):
    from config.celery import app

    _gpu_worker(f"{cpu_queue},{purged_gpu_queue}")
    with django_capture_on_commit_callbacks(execute=True):
        job = create_job(
            model_version=model_version, user=owner.user, recipe=DISTILL, dataset=dataset
        )
    assert job.queue == purged_gpu_queue and job.status == "queued"

    # The message really is on the gpu queue in Redis (the run's cpu worker never sees it).
    with app.connection_for_write() as conn, conn.SimpleQueue(purged_gpu_queue) as queue:
        message = queue.get(timeout=10)
        message.ack()
    assert message.headers["task"] == "jobs.run_compression_job"
    assert message.headers["id"] == job.celery_task_id
    assert message.payload[0] == [str(job.uuid)]


def test_it_records_the_cpu_queue_for_quantization(
    owner, model_version, cpu_queue, gpu_queue, django_capture_on_commit_callbacks
):
    _gpu_worker(f"{cpu_queue},{gpu_queue}")
    with django_capture_on_commit_callbacks(execute=False):
        job = create_job(model_version=model_version, user=owner.user, recipe=DYNAMIC_INT8)
    assert Job.objects.get(pk=job.pk).queue == cpu_queue


def test_it_decides_again_on_retry_with_the_workers_alive_then(
    client,
    owner,
    model_version,
    dataset,
    cpu_queue,
    gpu_queue,
    settings,
    django_capture_on_commit_callbacks,
):
    _gpu_worker(gpu_queue)
    with django_capture_on_commit_callbacks(execute=False):
        job = create_job(
            model_version=model_version, user=owner.user, recipe=DISTILL, dataset=dataset
        )
    assert job.queue == gpu_queue
    job.cancel()

    # The GPU worker went away: the retry trains on the cpu queue instead of waiting.
    WorkerHeartbeat.objects.update(
        last_seen=timezone.now() - timedelta(seconds=settings.MODELPRESS_WORKER_STALE_SECONDS + 5)
    )
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("jobs-retry", args=[job.uuid]))
    retried = Job.objects.exclude(pk=job.pk).get()
    assert response["Location"] == reverse("jobs-detail", args=[retried.uuid])
    assert retried.queue == cpu_queue
