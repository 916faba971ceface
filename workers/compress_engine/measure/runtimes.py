"""Latency of the original and the compressed model on every runtime this worker has.

The main comparison runs on the first provider the engine picked (CUDA on a GPU worker, else
the CPU). This adds one row per runtime a deployment might use: CPU, CUDA, and TensorRT
(fp16 for float models, int8 for the QDQ model our static quantization writes), each timed
where the worker has it and otherwise listed with the reason it is not, so a report from a
CPU worker says plainly that it holds no GPU figures.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.device import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    TENSORRT_PROVIDER,
    gpu_available,
)
from compress_engine.errors import short_message
from compress_engine.measure.latency import measure_against_copy, measure_latency
from compress_engine.measure.runtime import create_session
from compress_engine.report import Latency, NoiseBand, RuntimeLatency

# Sonames of TensorRT's core library that ONNX Runtime's TensorRT provider loads.
NVINFER_SONAMES = ("libnvinfer.so.10", "libnvinfer.so.8")


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


@functools.cache
def tensorrt_library() -> str | None:
    """The TensorRT library this process can load, or None."""
    for soname in NVINFER_SONAMES:
        try:
            ctypes.CDLL(soname)
            return soname
        except OSError:
            continue
    return None


def cuda_missing() -> str | None:
    """Why CUDA latency cannot be measured here; None when it can."""
    if CUDA_PROVIDER not in available_providers():
        return "ONNX Runtime on this worker has no CUDA provider (install onnxruntime-gpu)"
    if not gpu_available():
        return "no CUDA device on this worker"
    return None


def tensorrt_missing() -> str | None:
    """Why TensorRT latency cannot be measured here; None when it can."""
    if TENSORRT_PROVIDER not in available_providers():
        return "ONNX Runtime on this worker has no TensorRT provider"
    if not gpu_available():
        return "no CUDA device on this worker"
    if tensorrt_library() is None:
        return (
            "TensorRT's libraries (libnvinfer) are not installed on this worker "
            "(e.g. pip install tensorrt-cu12, or NVIDIA's TensorRT packages)"
        )
    return None


def has_qdq_int8(op_types: Mapping[str, int]) -> bool:
    """Whether a model with these op counts (ModelMeasurement.op_types) carries
    QuantizeLinear/DequantizeLinear pairs, TensorRT's explicit int8 form."""
    return op_types.get("QuantizeLinear", 0) > 0 and op_types.get("DequantizeLinear", 0) > 0


@dataclass(frozen=True)
class _Runtime:
    name: str
    providers: Sequence[Any]
    missing: Callable[[], str | None]
    # Which models it times: float ones, the QDQ int8 one, or both.
    models: str  # "both" | "int8"


def _tensorrt(precision: str, work: Path) -> list[Any]:
    options = {
        "trt_fp16_enable": True,
        "trt_int8_enable": precision == "int8",
        # Engines are built once per session; cached in the run's scratch folder only.
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(work / "tensorrt-cache"),
    }
    return [(TENSORRT_PROVIDER, options), CUDA_PROVIDER, CPU_PROVIDER]


def runtime_latencies(
    original: Path,
    result: Path,
    feeds: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    measured: tuple[Latency, Latency],
    *,
    noise: NoiseBand | None = None,
    qdq_int8: bool,
    warmup: int,
    runs: int,
    batch_size: int,
    threads: int,
    work: Path,
) -> list[RuntimeLatency]:
    """One row per runtime; the pair already `measured` (with its `noise` band) fills the
    row of its provider. `qdq_int8`: the result has QDQ nodes (has_qdq_int8), so TensorRT
    int8 applies. The other rows are timed here the same way: original, identical copy and
    result interleaved."""
    main = measured[0].provider
    runtimes = [
        _Runtime("CPU", [CPU_PROVIDER], lambda: None, "both"),
        _Runtime("CUDA", [CUDA_PROVIDER, CPU_PROVIDER], cuda_missing, "both"),
        _Runtime("TensorRT fp16", _tensorrt("fp16", work), tensorrt_missing, "both"),
        _Runtime("TensorRT int8", _tensorrt("int8", work), tensorrt_missing, "int8"),
    ]
    rows = []
    for rt in runtimes:
        first = rt.providers[0] if isinstance(rt.providers[0], str) else rt.providers[0][0]
        if rt.models == "int8" and not qdq_int8:
            rows.append(
                RuntimeLatency(
                    runtime=rt.name,
                    provider=first,
                    status="not applicable",
                    reason="the compressed model has no QDQ int8 nodes (static int8 writes them)",
                )
            )
            continue
        if first == main:
            rows.append(
                RuntimeLatency(
                    runtime=rt.name,
                    provider=first,
                    status="ok",
                    original=measured[0],
                    compressed=measured[1],
                    noise=noise,
                )
            )
            continue
        missing = rt.missing()
        if missing is not None:
            rows.append(
                RuntimeLatency(
                    runtime=rt.name, provider=first, status="unavailable", reason=missing
                )
            )
            continue
        rows.append(_time(rt, first, original, result, feeds, warmup, runs, batch_size, threads))
    return rows


def single_thread_row(
    original: Path,
    result: Path,
    feeds: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    *,
    warmup: int,
    runs: int,
    batch_size: int,
) -> RuntimeLatency:
    """The CPU comparison again at 1 intra-op thread ("CPU, 1 thread"), for when the
    multi-thread figure was unstable (report_figures.UNSTABLE_NOISE): one thread has no pool
    to wait on, so it holds up on a busy machine where several threads do not."""
    rt = _Runtime("CPU, 1 thread", [CPU_PROVIDER], lambda: None, "both")
    return _time(rt, CPU_PROVIDER, original, result, feeds, warmup, runs, batch_size, 1)


def _time(
    rt: _Runtime,
    provider: str,
    original: Path,
    result: Path,
    feeds: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    warmup: int,
    runs: int,
    batch_size: int,
    threads: int,
) -> RuntimeLatency:
    # At least one untimed run: TensorRT builds its engine on the first one.
    timing = {"warmup": max(1, warmup), "runs": runs, "batch_size": batch_size, "threads": threads}
    original_latency = noise = None
    try:
        result_session = _session(result, rt, provider, threads)
        if rt.models == "both":
            original_latency, (latency,), noise = measure_against_copy(
                (_session(original, rt, provider, threads), feeds[0]),
                _session(original, rt, provider, threads),
                [(result_session, feeds[1])],
                **timing,
            )
        else:  # the int8 runtime has no float original to compare with
            latency = measure_latency(result_session, feeds[1], **timing)
    except Exception as exc:  # a provider's own error types; the row says what went wrong
        return RuntimeLatency(
            runtime=rt.name, provider=provider, status="failed", reason=short_message(exc)
        )
    return RuntimeLatency(
        runtime=rt.name,
        provider=provider,
        status="ok",
        original=original_latency,
        compressed=latency,
        noise=noise,
    )


def _session(path: Path, rt: _Runtime, provider: str, threads: int) -> Any:
    session = create_session(path, providers=rt.providers, threads=threads)
    if session.get_providers()[0] != provider:
        # ONNX Runtime falls back silently when a provider cannot take the model.
        raise RuntimeError(f"ONNX Runtime fell back to {session.get_providers()[0]}")
    return session
