"""convert_to_onnx: turn an accepted upload into the canonical ONNX form, checked numerically.

ONNX needs no conversion (a zip is unpacked safely and re-saved canonically). Torch formats
are exported by `torch_convert` and TensorFlow formats by `tf_convert`, each in a subprocess
under a time limit: a converter crash or hang fails the conversion, never the worker. Each
converter also writes seeded example inputs and the source model's outputs on them; the
ONNX result must reproduce those outputs in ONNX Runtime before it is accepted. Language
models (a zipped Hugging Face folder, a GGUF file) become an onnxruntime-genai folder instead
(`compress_engine.llm.ingest_llm`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.archives import ZIP_ERRORS, extract_checked
from compress_engine.errors import EngineError, short_message
from compress_engine.ingest.capability import missing_package_message
from compress_engine.ingest.formats import ModelFormat
from compress_engine.ingest.shapes import InputSpec
from compress_engine.inspect import ModelInfo, inspect_onnx
from compress_engine.onnx_files import has_external_data

if TYPE_CHECKING:
    from compress_engine.report_llm import LlmInfo

MODEL_NAME = "model.onnx"
# Converted outputs must match the source within this (float32 round-off through a
# different kernel order); a real conversion bug is orders of magnitude above.
RTOL, ATOL = 1e-3, 1e-4
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding compress_engine
TF_SCRIPT = Path(__file__).with_name("tf_convert.py")


@dataclass(frozen=True)
class IngestResult:
    """The canonical model (`model`, with its data file beside it when `external_data`).

    For a language model, `model` is the model.onnx of an onnxruntime-genai folder (the
    folder's files: `llm.genai_build.genai_folder_files`) and `llm` holds its facts."""

    model: Path
    info: ModelInfo
    source_format: ModelFormat
    external_data: bool
    log: str
    llm: LlmInfo | None = None


def convert_to_onnx(
    src: Path,
    fmt: ModelFormat,
    out_dir: Path,
    *,
    input_shapes: list[InputSpec] | None = None,
    max_bytes: int | None = None,
    timeout_s: float = 1800,
) -> IngestResult:
    """Convert the upload at `src` (of format `fmt`) to `out_dir/model.onnx`.

    Raises EngineError with a message for the user when the model cannot be converted or the
    conversion does not compute what the source computes. Scratch files stay in `out_dir`.
    A language model is built into `out_dir/genai/` (see `llm.ingest_llm.convert_llm`)."""
    fmt = ModelFormat(fmt)
    if fmt.is_llm:
        from compress_engine.llm.ingest_llm import convert_llm

        return convert_llm(src, fmt, out_dir, max_bytes=max_bytes, timeout_s=timeout_s)
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    target = out_dir / MODEL_NAME
    specs = list(input_shapes or [])
    if fmt is ModelFormat.ONNX:
        info = inspect_onnx(src, max_bytes=max_bytes, external_data=False)
        shutil.copyfile(src, target)
        log = "ONNX file stored as uploaded."
    elif fmt is ModelFormat.ONNX_ZIP:
        from compress_engine.onnx_files import unpack_zip

        unpacked = unpack_zip(Path(src), work / "unzipped", max_bytes=max_bytes)
        inspect_onnx(unpacked, max_bytes=max_bytes)  # refuse garbage before loading it whole
        _resave(unpacked, target)
        info = inspect_onnx(target)
        log = f"ONNX model {unpacked.name} unpacked from the zip with its external data."
    else:
        if fmt in (ModelFormat.TORCHSCRIPT, ModelFormat.TORCH_EXPORT):
            log = _run_torch(Path(src).resolve(), fmt, work, specs, timeout_s)
        else:
            source = Path(src).resolve()
            if fmt is ModelFormat.SAVEDMODEL:
                source = _extract_saved_model(source, work / "saved_model", max_bytes)
            log = _run_tf(source, fmt, work, specs, timeout_s)
        raw = work / "raw.onnx"
        _resave(raw, target)
        info = inspect_onnx(target)
        log += " " + _verify(target, work / "reference.npz")
    size = info.size_bytes
    if max_bytes is not None and size > max_bytes:
        raise EngineError(
            f"The converted ONNX model is {size / 1e6:.1f} MB, more than the limit of "
            f"{max_bytes / 1e6:.1f} MB."
        )
    shutil.rmtree(work, ignore_errors=True)
    return IngestResult(
        model=target,
        info=info,
        source_format=fmt,
        external_data=has_external_data(target),
        log=log.strip(),
    )


def _resave(path: Path, target: Path) -> None:
    """Write the model in the canonical form: one file, or `model.onnx` + `model.onnx.data`
    when it passes the protobuf limit (save_model decides)."""
    from compress_engine.onnx_files import resave

    try:
        resave(path, target)  # external data, if any, comes into memory
    except Exception as exc:
        raise EngineError(f"The converted model cannot be read: {short_message(exc)}") from None


def _run(cmd: list[str], work: Path, env: dict[str, str], timeout_s: float, what: str) -> str:
    try:
        proc = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise EngineError(
            f"The {what} conversion ran past its {timeout_s:.0f} s limit and was stopped."
        ) from None
    except OSError as exc:
        raise EngineError(f"The {what} converter could not start: {short_message(exc)}") from None
    result_path = work / "result.json"
    if not result_path.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        why = f"exit status {proc.returncode}" + (f": {' / '.join(tail)}" if tail else "")
        raise EngineError(f"The {what} converter process died ({why}).")
    result = json.loads(result_path.read_text())
    if "missing" in result:  # the TensorFlow converter's environment lacks a package
        raise EngineError(
            missing_package_message(
                f"convert {what} models", result["missing"].split(".")[0], converter_env=True
            )
        )
    if "error" in result:
        raise EngineError(result["error"])
    return str(result.get("log", ""))


def _spec(src: Path, fmt: ModelFormat, work: Path, specs: list[InputSpec]) -> Path:
    spec = {
        "format": fmt.value,
        "source": str(src),
        "work": str(work),
        "inputs": [s.model_dump(mode="json") for s in specs],
    }
    path = work / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def _run_torch(
    src: Path, fmt: ModelFormat, work: Path, specs: list[InputSpec], timeout_s: float
) -> str:
    spec = _spec(src, fmt, work, specs)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "compress_engine.ingest.torch_convert", str(spec)]
    return _run(cmd, work, env, timeout_s, "PyTorch")


def _run_tf(
    src: Path, fmt: ModelFormat, work: Path, specs: list[InputSpec], timeout_s: float
) -> str:
    from compress_engine.device import converter_python

    python = converter_python()
    if python is None or not python.is_file():
        raise EngineError(
            "Keras and SavedModel uploads are converted with tf2onnx in the TensorFlow "
            "converter environment, which is not installed on this worker (make install "
            "creates .venv-tflite). Upload an ONNX export instead (tf2onnx.convert)."
        )
    spec = _spec(src, fmt, work, specs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)  # the main environment's packages must not leak in
    return _run([str(python), str(TF_SCRIPT), str(spec)], work, env, timeout_s, "TensorFlow")


def _extract_saved_model(archive: Path, dest: Path, max_bytes: int | None) -> Path:
    """Unpack a zipped SavedModel (checked: sizes, member paths, no links); returns the folder
    that holds saved_model.pb."""
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(archive)
    except ZIP_ERRORS:
        raise EngineError("The SavedModel zip cannot be read as a zip archive.") from None
    with zf:
        written = extract_checked(zf, dest, max_bytes)
    root = next((p.parent for p in written if p.name == "saved_model.pb"), None)
    if root is None:
        raise EngineError("The zip holds no saved_model.pb.")
    return root


def _verify(model: Path, reference: Path) -> str:
    """Run the ONNX model on the converter's example inputs; its outputs must match the
    source model's."""
    import onnxruntime as ort

    with np.load(reference, allow_pickle=False) as ref:
        feed = {k[3:]: ref[k] for k in ref.files if k.startswith("in:")}
        expected = [ref[f"out:{i}"] for i in range(sum(k.startswith("out:") for k in ref.files))]
    try:
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        got = session.run(None, feed)
    except Exception as exc:
        raise EngineError(
            f"ONNX Runtime cannot run the converted model: {short_message(exc)}"
        ) from None
    if len(got) != len(expected):
        raise EngineError(
            f"The converted model has {len(got)} outputs, the source model {len(expected)}."
        )
    worst = 0.0
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if g.shape != e.shape:
            raise EngineError(
                f"Output {i} of the converted model has shape {list(g.shape)}, the source "
                f"model's {list(e.shape)}."
            )
        if g.dtype.kind in "fc" or e.dtype.kind in "fc":
            g64, e64 = g.astype(np.float64), e.astype(np.float64)
            if not np.allclose(g64, e64, rtol=RTOL, atol=ATOL):
                diff = float(np.max(np.abs(g64 - e64)))
                raise EngineError(
                    f"The converted ONNX model does not compute what the source model computes: "
                    f"output {i} differs by up to {diff:.3g}. The converter mistranslated an "
                    "operator; try exporting to ONNX yourself (torch.onnx.export / tf2onnx)."
                )
            worst = max(worst, float(np.max(np.abs(g64 - e64))) if g.size else 0.0)
        elif not np.array_equal(g, e):
            raise EngineError(f"Output {i} of the converted model differs from the source model.")
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in feed.items())
    return (
        f"Checked against the source model on seeded inputs ({shapes}): max abs difference "
        f"{worst:.2g}."
    )
