"""TFLite export: convert in the converter's own environment, in a subprocess.

onnx2tf and TensorFlow pin numpy/onnx/onnxruntime versions the engine cannot share, and a
converter that crashes or hangs must not take the worker with it: the conversion runs as
`<converter python> tflite_convert.py spec.json` under a time limit, and every precision's
outcome (a file or an error) is read back from its result.json. The second route
(litert_route.py) runs the same way in an environment of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
ONNX2TF = "onnx2tf"


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
    # The route that made the files (onnx2tf or litert-torch); None where none was started.
    converter: str | None = ONNX2TF
    # The input shapes the files take, where the converter was given fixed ones (batch 1),
    # and the output shapes of that fixed model.
    input_shapes: dict[str, list[int | None]] = field(default_factory=dict)
    output_shapes: dict[str, list[int | None]] = field(default_factory=dict)


def convert_tflite(
    source: Path,
    work: Path,
    config: TfliteConfig,
    representative: Dataset | None,
    *,
    precisions: Sequence[str] | None = None,
    input_shapes: Mapping[str, Sequence[int | None]] | None = None,
) -> TfliteConversion:
    """Convert the float ONNX model `source` to `precisions` (default: config's), in `work`.

    `input_shapes`: the shapes `source`'s inputs were fixed at (export/pinned.py); onnx2tf is
    told them too. onnx2tf works on a copy of `source` (it rewrites its input file).
    Never raises for a conversion problem: each precision gets a file or an error.
    """
    precisions = list(precisions or config.precisions)
    if (size := model_bytes(source)) > FLATBUFFER_LIMIT:
        return failed_conversion(precisions, too_big(size))
    python = converter_python()
    if python is None or not python.is_file():
        return failed_conversion(precisions, _INSTALL_HINT)
    shapes = {k: list(v) for k, v in (input_shapes or {}).items()}
    # The converter runs with `work` as its cwd: every path it gets must be absolute.
    work, source = work.resolve(), source.resolve()
    work.mkdir(parents=True, exist_ok=True)
    spec = {
        "onnx": str(source),
        "out_dir": str(work),
        "precisions": precisions,
        "representative": write_representative(
            representative, precisions, work, config.representative_samples
        ),
        "int8_io": config.int8_io,
        "input_shapes": shapes,
    }
    outcome = run_converter(python, SCRIPT, spec, work, config.timeout_s, precisions)
    if isinstance(outcome, TfliteConversion):
        return outcome
    files = read_files(outcome, precisions, work)
    return TfliteConversion(
        files,
        dict(outcome.get("layouts", {})),
        outcome.get("versions", {}),
        ONNX2TF,
        {k: v for k, v in shapes.items() if v},
    )


def too_big(size: int) -> str:
    return (
        f"TFLite files hold at most 2 GB (a FlatBuffers limit) and this model's weights "
        f"take {size / 1e9:.2f} GB; use the ONNX file (external-data form) instead"
    )


def write_representative(
    representative: Dataset | None, precisions: Sequence[str], work: Path, samples: int
) -> str | None:
    """The int8 calibration samples as an .npz in `work` (ONNX layout), or None."""
    if representative is None or "int8" not in precisions:
        return None
    path = work / "representative.npz"
    np.savez(path, **representative.take(slice(0, samples)).inputs)
    return str(path)


def run_converter(
    python: Path,
    script: Path,
    spec: dict[str, Any],
    work: Path,
    timeout_s: int,
    precisions: Sequence[str],
    converter: str | None = ONNX2TF,
) -> dict[str, Any] | TfliteConversion:
    """Run `script spec.json` in the converter environment `python`, in `work`; its
    result.json, or a conversion where every precision failed with the reason."""
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)  # the main environment's packages must not leak in
    # Tools the converter calls by name (onnx2tf runs `onnxsim`) live beside its Python.
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
    try:
        proc = subprocess.run(
            [str(python), str(script), str(work / "spec.json")],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        why = f"the converter ran past its {timeout_s} s limit (tflite.timeout_s)"
        return failed_conversion(precisions, why, converter)
    except OSError as exc:
        why = f"the converter could not start: {short_message(exc)}"
        return failed_conversion(precisions, why, converter)
    result_path = work / "result.json"
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
    why = f"exit status {proc.returncode}" + (f": {' / '.join(tail)}" if tail else "")
    died = f"the converter process died ({why})"
    if not result_path.is_file():
        return failed_conversion(precisions, died, converter)
    result = dict(json.loads(result_path.read_text()))
    if proc.returncode != 0:  # the files written before it died are kept
        done = result.setdefault("precisions", {})
        for precision in precisions:
            done.setdefault(precision, {"error": f"{died} while converting it"})
    return result


def read_files(
    result: Mapping[str, Any], precisions: Sequence[str], work: Path
) -> list[TfliteFile]:
    """Each precision's file (in `work`) or error, from a converter's result.json."""
    files = []
    for precision in precisions:
        entry = result["precisions"].get(precision, {"error": "the converter skipped it"})
        if "file" in entry:
            files.append(TfliteFile(precision, work / entry["file"], seconds=entry.get("seconds")))
        else:
            files.append(TfliteFile(precision, error=entry["error"]))
    return files


def failed_conversion(
    precisions: Sequence[str], error: str, converter: str | None = ONNX2TF
) -> TfliteConversion:
    return TfliteConversion([TfliteFile(p, error=error) for p in precisions], {}, {}, converter)
