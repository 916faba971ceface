"""Worker heartbeats and the stale-job reaper, run on a thread in each worker's main process.

Liveness lives in the database, not in Celery's broadcast commands: the filesystem broker
has no broadcast, so `celery inspect ping` cannot work there.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from celery.signals import worker_ready, worker_shutdown

if TYPE_CHECKING:
    from compress_engine import WorkerDevice

log = logging.getLogger(__name__)

_stop = threading.Event()


def beat_once(hostname: str, queues: str, device: WorkerDevice, cannot_convert: str = "") -> None:
    """Refresh this worker's row (liveness, consumed queues, hardware, what it cannot convert)
    and reap stale jobs (re-queued once, then failed: jobs.services.reap_stale_jobs)."""
    from django.conf import settings
    from django.db import close_old_connections

    from jobs.models import WorkerHeartbeat
    from jobs.services import reap_stale_jobs

    close_old_connections()
    WorkerHeartbeat.beat(
        hostname,
        queues=queues,
        device=device.summary,
        cuda_device=device.cuda_device,
        cuda_device_count=device.cuda_device_count,
        cuda_memory_bytes=device.cuda_memory_bytes,
        cpu_cores=device.cpu_cores,
        providers=",".join(device.providers),
        cannot_convert=cannot_convert,
    )
    reaped = reap_stale_jobs(timedelta(seconds=settings.MODELPRESS_JOB_STALE_SECONDS))
    if reaped.failed or reaped.cancelled:
        log.warning(
            "their worker was lost: failed %d job(s) after their last run, cancelled %d",
            reaped.failed,
            reaped.cancelled,
        )


def _loop(hostname: str, queues: str, interval: float) -> None:
    from compress_engine import WorkerDevice, cpu_model_name, probe_worker_device

    try:
        # Probes the GPU in a child process: this (forking) process must not initialise CUDA.
        device = probe_worker_device()
    except Exception:  # never let the description stop the heartbeats; CPU-only gets no GPU jobs
        log.exception("could not describe this worker's hardware")
        device = WorkerDevice(cpu_model_name(), os.cpu_count() or 1)
    # The check imports torch in a child process (seconds): beats go on meanwhile.
    found: list[str] = [""]
    threading.Thread(
        target=lambda: found.__setitem__(0, check_converters()),
        name="modelpress-converter-check",
        daemon=True,
    ).start()
    while not _stop.is_set():
        try:
            beat_once(hostname, queues, device, found[0])
        except Exception:  # the database may be briefly unreachable; try again next tick
            log.exception("worker heartbeat failed")
        _stop.wait(interval)


def check_converters() -> str:
    """Import every converter and quantizer path once (in a child process) and log, loudly,
    what this worker cannot do for want of a package; the heartbeat row records the summary
    (`cannot_convert`). A user whose upload needs it gets the same message from the engine."""
    from compress_engine import probe_capabilities

    try:
        missing = probe_capabilities()
    except Exception:
        log.exception("could not check which converters this worker can run")
        return ""
    for item in missing:
        log.error("%s", item.message)
    return "; ".join(item.short for item in missing)


@worker_ready.connect
def _start_heartbeat(sender, **kwargs) -> None:
    from django.conf import settings

    hostname = sender.hostname
    # The queues this worker reads (-Q), not every queue the app knows (the default queue is
    # always among those): routing trusts this list.
    queues = ",".join(sorted(sender.app.amqp.queues.consume_from.keys()))
    _stop.clear()
    thread = threading.Thread(
        target=_loop,
        args=(hostname, queues, settings.MODELPRESS_WORKER_HEARTBEAT_SECONDS),
        name="modelpress-heartbeat",
        daemon=True,
    )
    thread.start()


@worker_shutdown.connect
def _stop_heartbeat(sender, **kwargs) -> None:
    from jobs.models import WorkerHeartbeat

    _stop.set()
    try:
        WorkerHeartbeat.objects.filter(hostname=sender.hostname).delete()
    except Exception:
        log.exception("could not remove the heartbeat row")
