"""Run the web app and one Celery worker in the foreground; Ctrl-C stops both cleanly."""

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
    help = "Serve the web app and run one Celery worker beside it (local use: `make run`)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", default=os.environ.get("PORT", "8000"))

    def handle(self, *args, host: str, port: str, **options) -> None:
        root = Path(settings.BASE_DIR)
        python = sys.executable
        web = [python, str(root / "manage.py"), "runserver", f"{host}:{port}", "--noreload"]
        # Both job queues: on a machine with a GPU, training jobs are routed to this worker's
        # gpu queue; without one, nothing is.
        queues = f"{settings.MODELPRESS_CPU_QUEUE},{settings.MODELPRESS_GPU_QUEUE}"
        worker = [
            python, "-m", "celery", "-A", "config.celery", "worker",
            "--loglevel", "INFO", "--concurrency", "1", "--queues", queues,
            "--hostname", f"local-worker@{os.uname().nodename}",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": _pythonpath(root)}
        children = [
            subprocess.Popen(web, env=env, cwd=root),
            subprocess.Popen(worker, env=env, cwd=root),
        ]
        self.stdout.write(
            f"ModelPress is running on http://{host}:{port}/ (web + worker). Ctrl-C stops both."
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
            self.stderr.write("A child process exited; stopping the other one.")
        _stop_all(children)
        failed = [c for c in children if c.returncode not in (0, -signal.SIGINT, -signal.SIGTERM)]
        if failed and not stopping:
            raise SystemExit(1)


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
