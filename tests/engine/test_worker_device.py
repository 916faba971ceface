"""The hardware a worker advertises (compress_engine.device.probe_worker_device)."""

from __future__ import annotations

import logging

import pytest

from compress_engine import device as device_mod
from compress_engine.device import WorkerDevice, probe_worker_device


def test_it_summarises_a_cpu_only_machine():
    cpu = WorkerDevice("Intel(R) Xeon(R) Processor", 2, providers=("CPUExecutionProvider",))
    assert cpu.summary == "Intel(R) Xeon(R) Processor (2 cores), no GPU"


def test_it_summarises_one_gpu_and_several():
    one = WorkerDevice("AMD EPYC 9654", 16, "NVIDIA H100 80GB HBM3", 1, 85_031_714_816)
    assert one.summary == "NVIDIA H100 80GB HBM3 (79 GiB); AMD EPYC 9654 (16 cores)"
    four = WorkerDevice("AMD EPYC 9654", 64, "NVIDIA L4", 4, 24 * 1024**3)
    assert four.summary == "4 × NVIDIA L4 (24 GiB each); AMD EPYC 9654 (64 cores)"


def test_it_describes_this_machine_as_the_engine_sees_it():
    found = probe_worker_device.__wrapped__()
    assert found.cpu_cores == device_mod.physical_cores() >= 1
    assert found.cpu_model == device_mod.cpu_model_name()
    assert "CPUExecutionProvider" in found.providers
    gpus = device_mod.cuda_devices()
    assert found.cuda_device_count == len(gpus)
    if gpus:
        assert (found.cuda_device, found.cuda_memory_bytes) == gpus[0]
    else:
        # onnxruntime-gpu lists its GPU providers here too; without a GPU they are unusable.
        assert (found.cuda_device, found.cuda_memory_bytes) == ("", 0)
        assert not set(found.providers) & device_mod.GPU_PROVIDERS
        assert found.summary.endswith(", no GPU")


def test_it_falls_back_to_cpu_only_when_the_probe_cannot_run(monkeypatch):
    monkeypatch.setattr(device_mod.sys, "executable", "/nonexistent/python")
    # Read off the module's own logger: whether a record reaches pytest's root handler
    # depends on what earlier tests in the session (a Celery worker, Django) did to logging.
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    device_mod.log.addHandler(handler)
    try:
        found = probe_worker_device.__wrapped__()
    finally:
        device_mod.log.removeHandler(handler)
    assert (found.cuda_device, found.cuda_device_count) == ("", 0)
    assert found.providers == ("CPUExecutionProvider",) and found.cpu_cores >= 1
    assert any("GPU probe failed" in r.getMessage() for r in records)


@pytest.mark.gpu
def test_it_names_the_gpu_and_its_memory():
    if not device_mod.gpu_available():
        pytest.skip("needs a CUDA device")
    found = probe_worker_device.__wrapped__()
    assert found.cuda_device and found.cuda_memory_bytes > 1024**3
    assert found.cuda_device in found.summary
