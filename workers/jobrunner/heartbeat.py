"""Worker heartbeats and the stale-job reaper, run on a thread in each worker's main process.

Liveness lives in the database, not in Celery's broadcast commands: the filesystem broker
has no broadcast, so `celery inspect ping` cannot work there.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta

from celery.signals import worker_ready, worker_shutdown

log = logging.getLogger(__name__)

_stop = threading.Event()


def _describe_device() -> str:
    try:
        from compress_engine.device import describe_device

        return describe_device()
    except Exception:  # device description is informative only
        return f"{os.cpu_count()} CPU cores"


def beat_once(hostname: str, queues: str, device: str) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from jobs.models import Job, WorkerHeartbeat

    close_old_connections()
    WorkerHeartbeat.beat(hostname, queues=queues, device=device)
    reaped = Job.reap_stale(timedelta(seconds=settings.MODELPRESS_JOB_STALE_SECONDS))
    if reaped:
        log.warning("marked %d job(s) failed: their worker stopped sending heartbeats", reaped)


def _loop(hostname: str, queues: str, interval: float) -> None:
    device = _describe_device()
    while not _stop.is_set():
        try:
            beat_once(hostname, queues, device)
        except Exception:  # the database may be briefly unreachable; try again next tick
            log.exception("worker heartbeat failed")
        _stop.wait(interval)


@worker_ready.connect
def _start_heartbeat(sender, **kwargs) -> None:
    from django.conf import settings

    hostname = sender.hostname
    queues = ",".join(sorted(sender.app.amqp.queues.keys()))
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
