"""At start a worker imports every converter and quantizer path: what it cannot run for want
of a package is logged as an error and recorded on its heartbeat row, which /healthz shows."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from django.urls import reverse

from compress_engine import WorkerDevice
from jobrunner.heartbeat import beat_once, check_converters
from jobs.models import WorkerHeartbeat
from runtime_env import blocking_env

# beat_once closes stale connections first (it runs on a long-lived thread).
pytestmark = pytest.mark.django_db(transaction=True)


def test_it_records_and_logs_the_formats_it_cannot_convert(
    client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The probe's child process inherits this: onnxscript is missing there.
    for key, value in blocking_env(tmp_path / "site", modules=("onnxscript",)).items():
        monkeypatch.setenv(key, value)

    with caplog.at_level(logging.ERROR, logger="jobrunner.heartbeat"):
        found = check_converters()
    beat_once("w@test", "cpu", WorkerDevice("test CPU", 2), found)

    assert "torch-export (onnxscript missing)" in found
    assert any(
        "This server cannot convert torch.export (.pt2) files: the Python package "
        "'onnxscript' is missing" in r.getMessage()
        for r in caplog.records
    )
    assert WorkerHeartbeat.objects.get(hostname="w@test").cannot_convert == found
    workers = client.get(reverse("web-healthz")).json()["checks"]["workers"]
    assert workers["cannot_convert"] == {"w@test": found}


def test_this_install_converts_every_torch_format_and_quantizes_int4() -> None:
    found = check_converters()

    assert not {"torchscript", "torch-export", "int4-weights", "int8"} & {
        part.split(" ")[0] for part in found.split("; ")
    }
