"""The worker heartbeat row: liveness plus the hardware that job routing reads."""

from __future__ import annotations

import pytest

from compress_engine.device import cuda_devices, physical_cores, probe_worker_device
from jobrunner.heartbeat import beat_once
from jobs.models import WorkerHeartbeat

# beat_once closes stale connections first (it runs on a long-lived thread), which a test
# transaction would not survive.
pytestmark = pytest.mark.django_db(transaction=True)


def test_it_advertises_this_machines_hardware(settings):
    device = probe_worker_device()
    beat_once("w@test", settings.MODELPRESS_CPU_QUEUE, device)

    row = WorkerHeartbeat.alive().get(hostname="w@test")
    assert row.queue_names == [settings.MODELPRESS_CPU_QUEUE]
    assert row.cpu_cores == physical_cores() > 0
    assert row.device == device.summary
    assert "CPUExecutionProvider" in row.providers.split(",")
    gpus = cuda_devices()
    if gpus:
        assert (row.cuda_device, row.cuda_memory_bytes) == gpus[0]
        assert row.cuda_device_count == len(gpus)
    else:  # this CPU-only machine: nothing for the gpu queue to count on
        assert (row.cuda_device, row.cuda_memory_bytes, row.cuda_device_count) == ("", 0, 0)
        assert "CUDAExecutionProvider" not in row.providers


def test_it_updates_the_row_in_place(settings):
    device = probe_worker_device()
    beat_once("w@test", "a", device)
    first = WorkerHeartbeat.objects.get(hostname="w@test")
    beat_once("w@test", "a,b", device)
    # The same row, rewritten (other hosts' rows, such as the session's Celery worker that an
    # earlier test may have started, are not this test's business).
    again = WorkerHeartbeat.objects.get(hostname="w@test")
    assert (again.pk, again.queue_names) == (first.pk, ["a", "b"])
    assert again.last_seen >= first.last_seen
