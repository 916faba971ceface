"""Test settings: the real services (PostgreSQL, Redis) unless the environment says otherwise."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/modelpress")
os.environ.setdefault("MODELPRESS_VAR_DIR", tempfile.mkdtemp(prefix="modelpress-test-var-"))

from config.settings import *  # noqa: F403
from config.settings import STORAGES, VAR_DIR

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {**STORAGES, "default": {**STORAGES["default"]}}
STORAGES["default"]["OPTIONS"] = {"location": str(VAR_DIR / "media")}
STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

# Integration tests run a real worker on the local Redis; a queue of this run's own keeps
# concurrent or earlier runs from delivering each other's tasks.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_DEFAULT_QUEUE = os.environ.setdefault(
    "CELERY_TASK_DEFAULT_QUEUE", f"modelpress-test-{os.getpid()}"
)
# The job queues follow that run-own default queue (settings.py read it before it was set).
MODELPRESS_CPU_QUEUE = os.environ.get("MODELPRESS_CPU_QUEUE") or CELERY_TASK_DEFAULT_QUEUE
MODELPRESS_GPU_QUEUE = os.environ.get("MODELPRESS_GPU_QUEUE") or f"{CELERY_TASK_DEFAULT_QUEUE}-gpu"
MODELPRESS_CONVERT_QUEUE = (
    os.environ.get("MODELPRESS_CONVERT_QUEUE") or f"{CELERY_TASK_DEFAULT_QUEUE}-convert"
)
# Each test process keeps its own cache: login rate-limit counts must not outlive a run or
# leak between concurrent runs through a shared Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
