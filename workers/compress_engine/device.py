"""Which hardware we run on, and which ONNX Runtime execution providers to ask for.

onnxruntime-gpu lists CUDAExecutionProvider as "available" even on machines without a GPU,
and asking for it there logs a CUDA load error; so the GPU is detected directly through the
CUDA driver API (no torch import).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


@functools.cache
def cuda_device_count() -> int:
    """Number of CUDA devices the driver sees; 0 without a driver or a GPU.

    Calls cuInit in this process: do it in the worker process that will use the GPU, not in a
    parent that forks afterwards (CUDA does not survive fork).
    """
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    try:
        if lib.cuInit(0) != 0:
            return 0
        count = ctypes.c_int(0)
        if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return int(count.value)
    except (AttributeError, OSError):
        return 0


def gpu_available() -> bool:
    return cuda_device_count() > 0


def select_providers(prefer_gpu: bool = True) -> list[str]:
    """Execution providers for an InferenceSession: CUDA first only where a GPU really exists."""
    if prefer_gpu and gpu_available():
        import onnxruntime as ort

        if CUDA_PROVIDER in ort.get_available_providers():
            return [CUDA_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def usable_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores available to this process: the intra-op thread count we use.

    Hyper-threads share execution units, so more threads than cores mostly adds contention.
    """
    cores: set[tuple[str, str]] = set()
    phys = core = ""
    for line in _cpuinfo_lines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not key:  # blank line ends a processor block
            if core:
                cores.add((phys, core))
            phys = core = ""
    if core:
        cores.add((phys, core))
    n = len(cores) or os.cpu_count() or 1
    return max(1, min(n, usable_cpus()))


def cpu_model_name() -> str:
    for line in _cpuinfo_lines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_name(index: int = 0) -> str | None:
    if cuda_device_count() <= index:
        return None
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        dev = ctypes.c_int(0)
        buf = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
            return None
        if lib.cuDeviceGetName(buf, len(buf), dev) != 0:
            return None
        return buf.value.decode(errors="replace")
    except (AttributeError, OSError):
        return None


def describe_device(provider: str = CPU_PROVIDER) -> str:
    """A one-line description of the hardware a measurement ran on, for the report."""
    cpu = f"{cpu_model_name()} ({physical_cores()} cores, {usable_cpus()} usable CPUs)"
    if provider == CUDA_PROVIDER:
        return f"{gpu_name() or 'CUDA GPU'} via {provider}; host {cpu}"
    return f"{cpu} via {provider}"


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return [*fh.read().splitlines(), ""]
    except OSError:
        return []
