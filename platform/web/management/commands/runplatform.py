"""Run the web app and the local Celery workers in the foreground; Ctrl-C stops all cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Serve the web app with two Celery workers beside it, one for jobs and one for model "
        "conversions (local use: `make run`; `--no-web` runs the workers only: `make worker`)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
        parser.add_argument("--no-web", action="store_true", help="Run the two workers only.")

    def handle(self, *args, host: str, port: str, no_web: bool = False, **options) -> None:
        root = Path(settings.BASE_DIR)
        python = sys.executable
        env = {**os.environ, "PYTHONPATH": _pythonpath(root)}
        # Both job queues: on a machine with a GPU, training jobs are routed to this worker's
        # gpu queue; without one, nothing is.
        job_queues = f"{settings.MODELPRESS_CPU_QUEUE},{settings.MODELPRESS_GPU_QUEUE}"
        # Conversions get a worker process of their own rather than a place in the job
        # worker's --queues: Celery reads its queues round-robin and a worker busy with an
        # hour-long job takes nothing else, so only a second process serves them at once.
        commands = [
            _worker(python, job_queues, "local-worker"),
            _worker(python, settings.MODELPRESS_CONVERT_QUEUE, "local-convert"),
        ]
        if not no_web:
            commands.insert(
                0, [python, str(root / "manage.py"), "runserver", f"{host}:{port}", "--noreload"]
            )
        children = [subprocess.Popen(command, env=env, cwd=root) for command in commands]
        what = "two workers (jobs, conversions)"
        self.stdout.write(
            f"ModelPress {what} are running. Ctrl-C stops them."
            if no_web
            else f"ModelPress is running on http://{host}:{port}/ (web + {what}). Ctrl-C stops all."
        )
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        while not stopping and all(child.poll() is None for child in children):
            time.sleep(0.5)
        if not stopping:
            self.stderr.write("A child process exited; stopping the others.")
        _stop_all(children)
        failed = [c for c in children if c.returncode not in (0, -signal.SIGINT, -signal.SIGTERM)]
        if failed and not stopping:
            raise SystemExit(1)


def _worker(python: str, queues: str, name: str) -> list[str]:
    """One Celery worker process with one job at a time (prefetch 1, acks late: settings)."""
    return [
        python, "-m", "celery", "-A", "config.celery", "worker",
        "--loglevel", "INFO", "--concurrency", "1", "--queues", queues,
        "--hostname", f"{name}@{os.uname().nodename}",
    ]  # fmt: skip


def _pythonpath(root: Path) -> str:
    paths = [str(root / "platform"), str(root / "workers")]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(paths)


def _stop_all(children: list[subprocess.Popen], grace: float = 20.0) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # celery: warm shutdown; runserver: exits
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
