"""Liveness of the pieces the platform needs: database, broker, storage, workers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"ok": True, "vendor": connection.vendor}


def check_broker() -> dict[str, Any]:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        transport = conn.transport_cls
    return {"ok": True, "transport": str(transport)}


def check_storage() -> dict[str, Any]:
    # Write, read back and delete a small probe: proves the storage (the filesystem, or the S3
    # bucket with these credentials) is reachable, writable and readable.
    from web.storage import is_object_store

    name = default_storage.save(f"healthz/{uuid.uuid4().hex}.txt", ContentFile(b"ok"))
    try:
        with default_storage.open(name, "rb") as handle:
            ok = handle.read() == b"ok"
    finally:
        default_storage.delete(name)
    return {"ok": ok, "backend": "s3" if is_object_store(default_storage) else "filesystem"}


def check_workers() -> dict[str, Any]:
    from jobs.models import WorkerHeartbeat

    rows = list(WorkerHeartbeat.alive().values_list("hostname", "cannot_convert"))
    result: dict[str, Any] = {"ok": bool(rows), "alive": [host for host, _ in rows]}
    # What a live worker found missing at start (jobrunner.heartbeat.check_converters).
    missing = {host: text for host, text in rows if text}
    if missing:
        result["cannot_convert"] = missing
    return result


CHECKS = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "workers": check_workers,
}

# `/healthz?probe=NAME` runs a subset, for orchestrators (deploy/k8s/40-web.yaml). Liveness does
# no I/O: a database outage must not get every web process restarted. Readiness checks what the
# web process talks to itself; workers are scaled on their own (GPU nodes may be at zero), and
# their absence must not take the web app out of the load balancer. Plain /healthz runs all.
PROBES: dict[str, tuple[str, ...]] = {
    "live": (),
    "ready": ("database", "broker", "storage"),
}


def run_checks(names: Iterable[str] | None = None) -> tuple[bool, dict[str, Any]]:
    results: dict[str, Any] = {}
    for name in CHECKS if names is None else names:
        check = CHECKS[name]
        try:
            results[name] = check()
        except Exception as exc:  # a check that raises is a failed check, reported by name
            results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return all(result["ok"] for result in results.values()), results
