"""The Celery application. Configuration comes from Django settings (CELERY_* keys).

It lives with the configuration, not with the worker, so the web can send tasks (by name,
web.queue) without importing the worker's code; workers load the task modules listed in
`include` (`celery -A config.celery worker`)."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("modelpress", include=["jobrunner.tasks", "jobrunner.heartbeat"])
app.config_from_object("django.conf:settings", namespace="CELERY")


def _ensure_filesystem_broker_dirs() -> None:
    # kombu's filesystem transport expects its folders to exist.
    options = app.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder", "processed_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


if str(app.conf.broker_url).startswith("filesystem://"):
    _ensure_filesystem_broker_dirs()
