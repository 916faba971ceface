"""TFLite export: convert in the converter's own environment, in a subprocess.

onnx2tf and TensorFlow pin numpy/onnx/onnxruntime versions the engine cannot share, and a
converter that crashes or hangs must not take the worker with it: the conversion runs as
`<converter python> tflite_convert.py spec.json` under a time limit, and every precision's
outcome (a file or an error) is read back from its result.json.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress_engine.data import Dataset
from compress_engine.device import CONVERTER_ENV, converter_python
from compress_engine.errors import short_message
from compress_engine.export_configs import TfliteConfig
from compress_engine.onnx_files import model_bytes

SCRIPT = Path(__file__).with_name("tflite_convert.py")
# A .tflite file is one FlatBuffer, whose offsets are 32-bit.
FLATBUFFER_LIMIT = 2**31 - 1
_INSTALL_HINT = (
    "the TFLite converter environment is not installed (make install creates .venv-tflite; "
    f"or set {CONVERTER_ENV} to a Python with the packages of requirements/tflite.txt)"
)


@dataclass(frozen=True)
class TfliteFile:
    """One precision's outcome: a file (path) or the reason there is none (error)."""

    precision: str
    path: Path | None = None
    error: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class TfliteConversion:
    files: list[TfliteFile]
    layouts: dict[str, str]  # input name -> "NHWC" | "NDHWC" | "as ONNX"
    versions: dict[str, str]


def convert_tflite(
    source: Path,
    work: Path,
    config: TfliteConfig,
    representative: Dataset | None,
) -> TfliteConversion:
    """Convert the float ONNX model `source` to every precision in `config`, in `work`.

    Never raises for a conversion problem: each precision gets a file or an error.
    """
    if (size := model_bytes(source)) > FLATBUFFER_LIMIT:
        return _all_failed(
            config,
            f"TFLite files hold at most 2 GB (a FlatBuffers limit) and this model's weights "
            f"take {size / 1e9:.2f} GB; use the ONNX file (external-data form) instead",
        )
    python = converter_python()
    if python is None or not python.is_file():
        return _all_failed(config, _INSTALL_HINT)
    # The converter runs with `work` as its cwd: every path it gets must be absolute.
    work, source = work.resolve(), source.resolve()
    work.mkdir(parents=True, exist_ok=True)
    spec = {
        "onnx": str(source),
        "out_dir": str(work),
        "precisions": list(config.precisions),
        "representative": None,
        "int8_io": config.int8_io,
    }
    if representative is not None and "int8" in config.precisions:
        path = work / "representative.npz"
        sample = representative.take(slice(0, config.representative_samples))
        np.savez(path, **sample.inputs)
        spec["representative"] = str(path)
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)  # the main environment's packages must not leak in
    try:
        proc = subprocess.run(
            [str(python), str(SCRIPT), str(work / "spec.json")],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=config.timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return _all_failed(
            config, f"the converter ran past its {config.timeout_s} s limit (tflite.timeout_s)"
        )
    except OSError as exc:
        return _all_failed(config, f"the converter could not start: {short_message(exc)}")
    result_path = work / "result.json"
    if not result_path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        why = f"exit status {proc.returncode}" + (f": {' / '.join(tail)}" if tail else "")
        return _all_failed(config, f"the converter process died ({why})")
    result = json.loads(result_path.read_text())
    files = []
    for precision in config.precisions:
        entry = result["precisions"].get(precision, {"error": "the converter skipped it"})
        if "file" in entry:
            files.append(TfliteFile(precision, work / entry["file"], seconds=entry.get("seconds")))
        else:
            files.append(TfliteFile(precision, error=entry["error"]))
    return TfliteConversion(files, dict(result.get("layouts", {})), result.get("versions", {}))


def _all_failed(config: TfliteConfig, error: str) -> TfliteConversion:
    return TfliteConversion([TfliteFile(p, error=error) for p in config.precisions], {}, {})
