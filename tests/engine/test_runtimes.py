"""Latency per runtime (CPU, CUDA, TensorRT fp16/int8): timed where the worker has it, else
listed with the reason; never CPU figures under a GPU runtime's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_engine import Report, compress
from compress_engine.device import CPU_PROVIDER, CUDA_PROVIDER, TENSORRT_PROVIDER, gpu_available
from compress_engine.measure import runtimes

FAST = {"latency_runs": 3, "warmup": 1, "fidelity_samples": 4, "batch_sizes": []}


def _run(model: Path, mode: str, data: Path | None, out: Path) -> Report:
    return compress(model, {"steps": [{"quantize": {"mode": mode}}], "evaluate": FAST}, data, out)


def _rows(report: Report) -> dict[str, object]:
    return {row.runtime: row for row in report.runtimes}


@pytest.fixture(scope="module")
def static_run(trained_cnn_path: Path, pattern_npz: Path, tmp_path_factory) -> Report:
    return _run(trained_cnn_path, "static-int8", pattern_npz, tmp_path_factory.mktemp("s"))


def test_every_runtime_has_a_row_and_the_main_one_is_the_comparisons_timing(
    static_run: Report,
) -> None:
    rows = _rows(static_run)

    assert list(rows)[:4] == ["CPU", "CUDA", "TensorRT fp16", "TensorRT int8"]
    # Where the multi-thread CPU figure was unstable, a 1-thread timing follows.
    assert list(rows)[4:] in ([], ["CPU, 1 thread"])
    main = next(
        r for r in static_run.runtimes if r.provider == static_run.original.latency.provider
    )
    assert main.status == "ok"
    assert main.original == static_run.original.latency
    assert main.compressed == static_run.result.latency


@pytest.mark.skipif(gpu_available(), reason="describes a worker without a GPU")
def test_a_cpu_worker_says_why_it_has_no_gpu_figures(static_run: Report) -> None:
    rows = _rows(static_run)

    assert rows["CPU"].status == "ok"
    for name in ("CUDA", "TensorRT fp16", "TensorRT int8"):
        assert rows[name].status == "unavailable" and rows[name].original is None
        assert rows[name].reason  # e.g. "no CUDA device on this worker"


def test_tensorrt_int8_needs_the_qdq_model_static_int8_writes(
    trained_cnn_path: Path, tmp_path: Path
) -> None:
    report = _run(trained_cnn_path, "dynamic-int8", None, tmp_path)

    row = _rows(report)["TensorRT int8"]
    assert row.status == "not applicable" and "QDQ" in row.reason


def test_the_reasons_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtimes, "available_providers", lambda: [CPU_PROVIDER])
    assert "no TensorRT provider" in runtimes.tensorrt_missing()
    assert "install onnxruntime-gpu" in runtimes.cuda_missing()

    monkeypatch.setattr(
        runtimes, "available_providers", lambda: [TENSORRT_PROVIDER, CUDA_PROVIDER, CPU_PROVIDER]
    )
    monkeypatch.setattr(runtimes, "gpu_available", lambda: True)
    monkeypatch.setattr(runtimes, "tensorrt_library", lambda: None)
    assert "libnvinfer" in runtimes.tensorrt_missing()
    assert runtimes.cuda_missing() is None


@pytest.mark.skipif(gpu_available(), reason="needs ONNX Runtime to fall back: no GPU here")
def test_a_silent_fallback_to_the_cpu_is_a_failed_row_not_gpu_figures(
    static_run: Report, trained_cnn_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if CUDA were there: ONNX Runtime then runs the session on the CPU without a word.
    monkeypatch.setattr(runtimes, "cuda_missing", lambda: None)

    report = _run(trained_cnn_path, "dynamic-int8", None, tmp_path)

    row = _rows(report)["CUDA"]
    assert row.status == "failed" and "fell back to CPUExecutionProvider" in row.reason
    assert row.original is None and row.compressed is None


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA device")
def test_a_gpu_worker_times_cuda(static_run: Report) -> None:
    row = _rows(static_run)["CUDA"]
    assert (
        row.status == "ok" and row.original is not None and row.original.provider == CUDA_PROVIDER
    )
