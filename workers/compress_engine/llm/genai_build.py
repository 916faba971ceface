"""Export a Hugging Face causal LM to an onnxruntime-genai folder with the library's own model
builder (model.onnx with a KV cache + model.onnx.data + genai_config.json + tokenizer files).

The builder runs as `python -m onnxruntime_genai.models.builder` in a child process under a
time limit. ModelPress builds float32 for the CPU and quantizes afterwards with ONNX Runtime's
own quantizers; the builder's 0.18 quantization options `matmul_mixed_precision=last_matmul:int8`
and `is_symmetric=false` write invalid models, so none of its extra options is ever passed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from compress_engine.errors import EngineError
from compress_engine.llm.child import log_tail, missing_module_in_log, run_python

GENAI_CONFIG = "genai_config.json"
REQUIRED_FILES = ("model.onnx", GENAI_CONFIG, "tokenizer.json")
# What the builder can write for the CPU (its own list: FP32 CPU, INT8 CPU, INT4 CPU).
PRECISIONS = ("fp32", "int8", "int4")
# Modules the builder imports at its top; missing ones are an installation problem.
BUILDER_MODULES = ("onnxruntime_genai", "onnx_ir", "onnx", "torch", "transformers")
_WEIGHT_SUFFIXES = (".onnx", ".data", ".onnx_data")


def build_genai(hf_dir: Path, out_dir: Path, *, precision: str = "fp32", timeout_s: float) -> Path:
    """Build the genai folder `out_dir` from the Hugging Face folder `hf_dir`; returns it.

    EngineError when a package the builder needs is missing, the builder fails or runs past
    `timeout_s`, or the folder lacks model.onnx, genai_config.json or tokenizer.json."""
    from compress_engine.ingest.capability import missing_package_message

    if precision not in PRECISIONS:
        raise EngineError(
            f"The model builder writes {', '.join(PRECISIONS)} for the CPU, not {precision!r}."
        )
    for module in BUILDER_MODULES:
        if importlib.util.find_spec(module) is None:
            raise EngineError(missing_package_message("export language models", module))
    hf_dir, out_dir = Path(hf_dir).resolve(), Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # The builder's -c cache holds downloads (none here: offline) and scratch files.
    scratch = Path(tempfile.mkdtemp(prefix=".genai-build-", dir=out_dir.parent))
    try:
        log = scratch / "builder.log"
        args = ["-m", "onnxruntime_genai.models.builder", "-i", str(hf_dir), "-o", str(out_dir)]
        args += ["-p", precision, "-e", "cpu", "-c", str(scratch / "cache")]
        what = "model builder (onnxruntime-genai)"
        proc = run_python(args, cwd=scratch, log=log, timeout_s=timeout_s, what=what)
        if proc.returncode != 0:
            missing = missing_module_in_log(log)
            if missing:
                raise EngineError(missing_package_message("export language models", missing))
            raise EngineError(
                f"onnxruntime-genai's model builder failed (exit status {proc.returncode}): "
                f"{log_tail(log, 3) or 'no output'}"
            )
        absent = [name for name in REQUIRED_FILES if not (out_dir / name).is_file()]
        if absent:
            raise EngineError(
                f"onnxruntime-genai's model builder wrote no {', '.join(absent)} "
                f"(its log ends: {log_tail(log, 3) or 'no output'})."
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


def decoder_model(folder: Path) -> Path:
    """The decoder's ONNX file, as genai_config.json names it (model.onnx by default)."""
    folder = Path(folder)
    try:
        config = json.loads((folder / GENAI_CONFIG).read_text(encoding="utf-8"))
        name = config["model"]["decoder"].get("filename") or "model.onnx"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise EngineError(f"{GENAI_CONFIG} in {folder.name} cannot be read.") from None
    from compress_engine.archives import inside

    return inside(folder, str(name), "the model folder")


def genai_folder_files(folder: Path) -> list[Path]:
    """The files that make up the genai folder: the decoder model and its data files, then
    genai_config.json and the tokenizer/processing files beside them (sorted). Other ONNX or
    data files lying in the folder (scratch of a quantizer) are left out."""
    from compress_engine.onnx_files import model_files

    folder = Path(folder)
    model = model_files(decoder_model(folder))
    taken = {p.resolve() for p in model}
    rest = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.resolve() not in taken
        and not p.name.endswith(_WEIGHT_SUFFIXES)
    )
    return [*model, *rest]


def folder_model_bytes(folder: Path) -> int:
    """Bytes of the decoder model and its data files (the figure sizes are compared on)."""
    from compress_engine.onnx_files import model_bytes

    return model_bytes(decoder_model(folder))
