"""`make run` / `make worker` (manage.py runplatform): the local job worker and a separate
conversion worker, so a conversion never waits behind a running job."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from web.management.commands import runplatform


class _Exited:
    """A child that has already exited cleanly: the command's loop stops at once."""

    def __init__(self, command, **kwargs) -> None:
        self.command = command
        self.returncode = 0

    def poll(self) -> int:
        return 0

    def wait(self, timeout: float | None = None) -> int:
        return 0


@pytest.fixture
def started(monkeypatch) -> list[list[str]]:
    commands: list[list[str]] = []

    def popen(command, **kwargs):
        commands.append(command)
        return _Exited(command)

    monkeypatch.setattr(runplatform.subprocess, "Popen", popen)
    monkeypatch.setattr(runplatform.signal, "signal", lambda *args: None)
    return commands


def _queues(command: list[str]) -> str:
    return command[command.index("--queues") + 1]


def test_it_starts_the_web_a_job_worker_and_a_conversion_worker(started, settings):
    call_command("runplatform", "--port", "8123")

    web, jobs, conversions = started
    assert web[-3:] == ["runserver", "127.0.0.1:8123", "--noreload"]
    assert _queues(jobs) == f"{settings.MODELPRESS_CPU_QUEUE},{settings.MODELPRESS_GPU_QUEUE}"
    assert _queues(conversions) == settings.MODELPRESS_CONVERT_QUEUE
    for worker in (jobs, conversions):
        assert worker[worker.index("--concurrency") + 1] == "1"
    assert jobs[jobs.index("--hostname") + 1] != conversions[conversions.index("--hostname") + 1]


def test_make_worker_starts_both_workers_without_the_web(started, settings):
    call_command("runplatform", "--no-web")

    assert [_queues(c) for c in started] == [
        f"{settings.MODELPRESS_CPU_QUEUE},{settings.MODELPRESS_GPU_QUEUE}",
        settings.MODELPRESS_CONVERT_QUEUE,
    ]
