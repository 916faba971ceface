"""The id of the job being run, on every log record emitted while it runs.

run_job enters job_log_context (through the with_job_log_context decorator); JobIdFilter,
attached to the console handler in settings.LOGGING, copies the id onto each record as
`job_id` (None outside a job), which the JSON log format writes out. A context variable
rather than a global: it follows the running job and is reset when the run ends.
It lives with the configuration because settings.LOGGING names the filter for web and
worker processes alike.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

_job_id: ContextVar[str | None] = ContextVar("modelpress_job_id", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def current_job_id() -> str | None:
    return _job_id.get()


@contextmanager
def job_log_context(job_id: object) -> Iterator[None]:
    """Tag the log records emitted inside the block with `job_id`."""
    token = _job_id.set(str(job_id))
    try:
        yield
    finally:
        _job_id.reset(token)


def with_job_log_context(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func(job_uuid, ...)` inside job_log_context(job_uuid)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        job_uuid = args[0] if args else kwargs["job_uuid"]
        with job_log_context(job_uuid):
            return func(*args, **kwargs)

    return wrapper


class JobIdFilter(logging.Filter):
    """Sets `record.job_id` to the current job's id, unless the call passed its own
    (`extra={"job_id": ...}`, as the web's job services do)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = _job_id.get()
        return True
