"""The platform as `make run` starts it: SQLite, filesystem broker, web + worker in one
foreground process, demo login printed. Driven through a real browser."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Variables the test settings set for the PostgreSQL/Redis suites; the embedded platform
# must run without any of them.
SERVICE_VARIABLES = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_TASK_DEFAULT_QUEUE",
    "DJANGO_SETTINGS_MODULE",
    "MODELPRESS_VAR_DIR",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
}

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _manage(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True, **kwargs,
    )  # fmt: skip


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "runplatform exited early"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the embedded platform never became healthy")


def test_it_runs_the_whole_flow_on_embedded_defaults(page, tiny_cnn_onnx, tmp_path):
    from playwright.sync_api import expect

    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env["MODELPRESS_VAR_DIR"] = str(tmp_path / "var")
    _manage(env, "migrate", "--noinput")
    printed = _manage(env, "ensure_demo_user").stdout
    password = re.search(r"username demo\s+password (\S+)", printed).group(1)

    port = _free_port()
    log_path = tmp_path / "runplatform.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runplatform", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        assert (tmp_path / "var" / "modelpress.sqlite3").exists()

        page.goto(url)
        page.fill("#id_username", "demo")
        page.fill("#id_password", password)
        page.click("button[type=submit]")
        page.fill("input[name=name]", "Embedded")
        page.click("text=Create project")
        page.set_input_files("#upload-form input[type=file]", str(tiny_cnn_onnx))
        page.click("text=Upload and check")
        expect(page.get_by_role("heading", name="tiny_cnn")).to_be_visible()
        # The form suggests `auto` for a CNN without a dataset, which may keep the original;
        # dynamic int8 always writes a quantized file to look for.
        page.select_option("#job-preset", "fast-int8")
        step = page.get_by_test_id("builder-step")
        expect(step).to_have_attribute("data-technique", "quantize:dynamic-int8")
        page.click("text=Start job")
        expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=180_000)
        expect(page.get_by_test_id("artifacts")).to_contain_text("model.int8.onnx")
        # Files landed under var/media, the broker's files under var/broker.
        assert list((tmp_path / "var" / "media" / "artifacts").rglob("*.onnx"))
        assert (tmp_path / "var" / "broker").is_dir()
    finally:
        # Ctrl-C in a terminal signals the whole foreground group; do the same.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            pytest.fail("runplatform did not stop within 30 s of Ctrl-C:\n" + log_path.read_text())
    assert process.returncode == 0, log_path.read_text()[-3000:]
