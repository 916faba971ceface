"""Which hardware we run on, and which ONNX Runtime execution providers to ask for.

onnxruntime-gpu lists CUDAExecutionProvider as "available" even on machines without a GPU,
and asking for it there logs a CUDA load error; so the GPU is detected directly through the
CUDA driver API (no torch import).
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"
# Providers that onnxruntime-gpu lists whether or not a GPU is present.
GPU_PROVIDERS = frozenset({CUDA_PROVIDER, TENSORRT_PROVIDER})
# The TensorFlow/TFLite converter environment (export to TFLite, Keras/SavedModel ingest):
# a Python of its own, since TensorFlow pins versions the engine cannot share.
CONVERTER_ENV = "MODELPRESS_TFLITE_PYTHON"
# Where `make install` puts it: beside the main environment, at the repo root.
_DEFAULT_VENV = ".venv-tflite"


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


# cgroup v2's CPU bandwidth limit ("<quota> <period>" or "max <period>"): what a Kubernetes
# CPU limit or `docker run --cpus` sets. The affinity mask still lists every CPU of the node.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path | None = None) -> int | None:
    """Whole CPUs the container's CPU quota allows (at least 1); None without a quota."""
    try:
        quota, period = (path or CGROUP_CPU_MAX).read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, int(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def usable_cpus() -> int:
    """CPUs this process may run on: affinity mask or container cpuset, capped by a cgroup
    CPU quota, so a worker limited to 4 CPUs on a 64-core node starts 4 threads, not 64
    that the quota would throttle."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return cpus if limit is None else min(cpus, limit)


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


def cuda_devices() -> list[tuple[str, int]]:
    """(name, total memory in bytes) of each CUDA device the driver sees (cuInit: see
    cuda_device_count about fork)."""
    devices: list[tuple[str, int]] = []
    count = cuda_device_count()
    if not count:
        return devices
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        for index in range(count):
            dev = ctypes.c_int(0)
            total = ctypes.c_size_t(0)
            if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
                continue
            if lib.cuDeviceTotalMem_v2(ctypes.byref(total), dev) != 0:
                total.value = 0
            devices.append((gpu_name(index) or "CUDA GPU", int(total.value)))
    except (AttributeError, OSError):
        pass
    return devices


@dataclass(frozen=True)
class WorkerDevice:
    """The hardware a worker offers its jobs, as workers advertise it and jobs record it."""

    cpu_model: str
    cpu_cores: int
    cuda_device: str = ""  # name of device 0; "" without a usable GPU
    cuda_device_count: int = 0
    cuda_memory_bytes: int = 0  # total memory of device 0
    providers: tuple[str, ...] = ()  # ONNX Runtime providers usable here, preferred first

    @property
    def summary(self) -> str:
        """One line, e.g. "NVIDIA H100 80GB HBM3 (80 GiB); AMD EPYC 9654 (16 cores)"."""
        cpu = f"{self.cpu_model} ({self.cpu_cores} cores)"
        if not self.cuda_device:
            return f"{cpu}, no GPU"
        gib = self.cuda_memory_bytes / 1024**3
        count = f"{self.cuda_device_count} × " if self.cuda_device_count > 1 else ""
        each = " each" if self.cuda_device_count > 1 else ""
        return f"{count}{self.cuda_device} ({gib:.0f} GiB{each}); {cpu}"


def _probe_gpu() -> dict[str, object]:
    """GPU facts for probe_worker_device, gathered in a child process (see there)."""
    devices = cuda_devices()
    try:
        import onnxruntime as ort

        available = list(ort.get_available_providers())
    except ImportError:
        available = []
    usable = [p for p in available if devices or p not in GPU_PROVIDERS]
    return {"cuda_devices": devices, "providers": usable}


@functools.cache
def probe_worker_device(timeout: float = 120.0) -> WorkerDevice:
    """This machine's WorkerDevice; GPU facts come from a short-lived child process.

    The child calls cuInit, so the calling process stays free of CUDA state: a Celery
    worker's main process (which forks pool processes later) can call this safely, and the
    child honours CUDA_VISIBLE_DEVICES exactly as the engine's own CUDA use will. If the probe
    fails the worker is described as CPU-only, so no GPU job is sent to it.
    """
    cpu_model, cpu_cores = cpu_model_name(), physical_cores()
    # The child must import this package even where it is not installed (a source checkout).
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-c", "import compress_engine.device as d; d._print_probe()"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, check=True
        )
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        devices = [(str(name), int(memory)) for name, memory in facts["cuda_devices"]]
        providers = tuple(str(p) for p in facts["providers"])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError) as exc:
        stderr = getattr(exc, "stderr", None) or ""
        log.warning("GPU probe failed, describing this worker as CPU-only: %s %s", exc, stderr)
        return WorkerDevice(cpu_model, cpu_cores, providers=(CPU_PROVIDER,))
    name, memory = devices[0] if devices else ("", 0)
    return WorkerDevice(
        cpu_model,
        cpu_cores,
        cuda_device=name,
        cuda_device_count=len(devices),
        cuda_memory_bytes=memory,
        providers=providers,
    )


def _print_probe() -> None:
    print(json.dumps(_probe_gpu()))


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


def converter_python() -> Path | None:
    """The converter environment's Python: $MODELPRESS_TFLITE_PYTHON, else .venv-tflite next
    to the running environment or at the source tree's root."""
    configured = os.environ.get(CONVERTER_ENV)
    if configured:
        return Path(configured)
    roots = [Path(sys.prefix).parent, Path(__file__).resolve().parents[2]]
    for root in roots:
        candidate = root / _DEFAULT_VENV / "bin" / "python"
        if candidate.is_file():
            return candidate
    return None
