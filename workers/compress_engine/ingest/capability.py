"""What this installation can convert and quantize, and the message when a package is missing.

A converter that fails with ModuleNotFoundError is an installation problem, not a fault of
the uploaded model: the user is told which package the server lacks and to ask the
administrator, never to fix the model. Workers run `probe_capabilities()` at start so the
administrator sees the same thing in the worker's log and heartbeat before anyone uploads.

    python -m compress_engine.ingest.capability   # prints the probe's JSON (the worker runs it)

The probe runs in a child process: importing torch into the worker's forking parent would
make every job process inherit it.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compress_engine.errors import EngineError

# Modules whose import name is not their pip name.
_PIP_NAMES = {"onnx_ir": "onnx-ir", "PIL": "pillow", "yaml": "PyYAML", "google": "protobuf"}
_NO_MODULE = re.compile(r"No module named '([^']+)'")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding compress_engine
_CONVERTER_ENV = "the TensorFlow converter environment (.venv-tflite, requirements/tflite.txt)"


@dataclass(frozen=True)
class Capability:
    """One thing the server does with third-party packages, and the modules it imports."""

    key: str  # a ModelFormat value or a technique name
    what: str  # completes "This server cannot ..."
    modules: tuple[str, ...]
    converter_env: bool = False  # imported in the TensorFlow converter's environment


# The import entry points of each path; tests/engine/test_runtime_dependencies.py runs the
# paths themselves in an environment limited to the main dependencies.
CAPABILITIES = (
    Capability("torchscript", "convert TorchScript (.pt) files", ("torch", "torch.onnx", "onnx")),
    Capability(
        "torch-export",
        "convert torch.export (.pt2) files",
        ("torch", "torch.onnx", "onnxscript", "onnx_ir"),
    ),
    Capability("keras", "convert Keras (.keras) files", ("tensorflow", "tf2onnx"), True),
    Capability("savedmodel", "convert TensorFlow SavedModels", ("tensorflow", "tf2onnx"), True),
    Capability(
        "int8",
        "quantize to int8",
        ("onnxruntime.quantization",),
    ),
    Capability(
        "int4-weights",
        "quantize weights to int4",
        ("onnxruntime.quantization.matmul_nbits_quantizer",),
    ),
    Capability(
        "torch-passes",
        "prune, distill or fine-tune models",
        ("torch", "onnx2torch", "torch_pruning"),
    ),
    Capability("tflite", "export TFLite files", ("onnx2tf", "tensorflow"), True),
)


@dataclass(frozen=True)
class MissingCapability:
    """A capability this server lacks: the package that is missing, or why it cannot run."""

    key: str
    what: str
    package: str
    converter_env: bool = False

    @property
    def message(self) -> str:
        return missing_package_message(self.what, self.package, converter_env=self.converter_env)

    @property
    def short(self) -> str:
        return f"{self.key} ({self.package} missing)"


def pip_name(module: str) -> str:
    top = module.split(".")[0]
    return _PIP_NAMES.get(top, top.replace("_", "-"))


def missing_package_message(what: str, package: str, *, converter_env: bool = False) -> str:
    where = f" in {_CONVERTER_ENV}" if converter_env else f" (pip install {pip_name(package)})"
    return (
        f"This server cannot {what}: the Python package '{package}' is missing; ask the "
        f"administrator to install it{where}. The uploaded model is not at fault."
    )


def missing_module(exc: BaseException) -> str | None:
    """The top-level module a failure comes down to not finding, if it does: an ImportError
    anywhere in the exception's chain, or its message as libraries re-word it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ImportError) and current.name:
            return current.name.split(".")[0]
        found = _NO_MODULE.search(str(current))
        if found:
            return found.group(1).split(".")[0]
        current = current.__cause__ or current.__context__
    return None


def missing_package_error(
    what: str, exc: BaseException, *, converter_env: bool = False
) -> EngineError | None:
    """The EngineError to raise instead of `exc` when it is a missing package, else None."""
    module = missing_module(exc)
    if module is None:
        return None
    return EngineError(missing_package_message(what, module, converter_env=converter_env))


def check_imports(modules: tuple[str, ...]) -> str | None:
    """The first module among `modules` (or one they import) that cannot be imported."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            return missing_module(exc) or name.split(".")[0]
    return None


def _probe_here() -> dict[str, str]:
    """key -> missing module, for the capabilities that run in this Python."""
    found: dict[str, str] = {}
    for cap in CAPABILITIES:
        if not cap.converter_env:
            missing = check_imports(cap.modules)
            if missing:
                found[cap.key] = missing
    return found


_CONVERTER_PROBE = (
    "import importlib.util as u, json, sys; "
    "print(json.dumps({m: u.find_spec(m) is not None for m in sys.argv[1:]}))"
)


def _probe_converter_env(python: Path | None, timeout_s: float) -> dict[str, str]:
    caps = [c for c in CAPABILITIES if c.converter_env]
    if python is None or not python.is_file():
        return {c.key: "the environment .venv-tflite" for c in caps}
    modules = sorted({m for c in caps for m in c.modules})
    proc = subprocess.run(
        [str(python), "-c", _CONVERTER_PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    found = json.loads(proc.stdout) if proc.returncode == 0 else {}
    missing: dict[str, str] = {}
    for cap in caps:
        absent = next((m for m in cap.modules if not found.get(m)), None)
        if absent:
            missing[cap.key] = absent
    return missing


def probe_capabilities(timeout_s: float = 180) -> list[MissingCapability]:
    """What this server cannot do for want of a package, checked by importing each path's
    entry modules in a child process (and looking into the converter environment)."""
    from compress_engine.device import converter_python

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "compress_engine.ingest.capability"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        tail = " / ".join((proc.stderr or "").strip().splitlines()[-2:])
        raise RuntimeError(f"the capability probe failed (exit {proc.returncode}): {tail}")
    missing = json.loads(proc.stdout.strip().splitlines()[-1])
    missing |= _probe_converter_env(converter_python(), timeout_s)
    by_key = {c.key: c for c in CAPABILITIES}
    return [
        MissingCapability(key, by_key[key].what, package, by_key[key].converter_env)
        for key, package in missing.items()
    ]


if __name__ == "__main__":
    print(json.dumps(_probe_here()))
