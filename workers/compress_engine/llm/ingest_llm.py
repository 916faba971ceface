"""Ingest of a language model: an uploaded Hugging Face folder zip or GGUF file becomes an
onnxruntime-genai folder (float32, CPU), checked by loading it and generating, plus its facts.

    upload --(unzip, checked | dequantize GGUF)--> HF folder --(model builder)--> genai folder
           --(onnxruntime-genai loads it, generates a few tokens)--> IngestResult

Scratch folders are removed on success and failure alike; only the genai folder stays.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from compress_engine.errors import EngineError
from compress_engine.ingest.convert import IngestResult
from compress_engine.ingest.formats import ModelFormat, detect_format
from compress_engine.llm.genai_build import build_genai, folder_model_bytes
from compress_engine.llm.genai_check import check_genai_folder
from compress_engine.llm.gguf_upload import GgufSummary, gguf_to_hf, read_gguf_header
from compress_engine.llm.hf_upload import check_hf_folder, unpack_hf_zip
from compress_engine.llm.llm_info import llm_info, write_llm_info
from compress_engine.report_llm import LlmInfo

GENAI_FOLDER = "genai"
DEFAULT_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class BuiltLlm:
    """A genai folder built from an upload, the model's facts and what was done, in words."""

    folder: Path
    info: LlmInfo
    log: str


class _Deadline:
    """One time limit shared by the steps: each child gets what is left."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise EngineError(
                f"Building the language model ran past its {self.seconds:.0f} s limit."
            )
        return left


def check_llm_upload(path: Path, fmt: ModelFormat, *, max_bytes: int | None = None) -> None:
    """What an upload can be refused for before it is stored, beyond detect_format (which has
    checked an HF folder zip's members already): a GGUF file's header, read without loading a
    tensor, must name an architecture transformers reads and fit `max_bytes` as float32."""
    if fmt is ModelFormat.GGUF:
        _gguf_summary(Path(path), max_bytes)


def _gguf_summary(path: Path, max_bytes: int | None) -> GgufSummary:
    summary = read_gguf_header(path)
    if max_bytes is not None and summary.float32_bytes > max_bytes:
        raise EngineError(
            f"Dequantized to float32, the GGUF model ({summary.parameters:,} parameters) "
            f"takes {summary.float32_bytes / 1e6:,.0f} MB, more than the limit of "
            f"{max_bytes / 1e6:,.0f} MB."
        )
    return summary


def build_llm(
    upload: Path,
    fmt: ModelFormat,
    dest: Path,
    *,
    work: Path,
    max_bytes: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> BuiltLlm:
    """Build the genai folder `dest` from an HF folder zip or GGUF file; scratch in `work`."""
    deadline = _Deadline(timeout_s)
    upload, dest, work = Path(upload).resolve(), Path(dest).resolve(), Path(work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if fmt is ModelFormat.HF_LLM_ZIP:
        hf_dir = unpack_hf_zip(upload, work / "hf", max_bytes=max_bytes)
        arch = check_hf_folder(hf_dir)
        info = llm_info(hf_dir, source_format="hf-folder")
        log = f"Hugging Face folder ({arch}) unpacked from the zip."
    elif fmt is ModelFormat.GGUF:
        summary = _gguf_summary(upload, max_bytes)
        hf_dir = gguf_to_hf(upload, work / "hf", timeout_s=deadline.left())
        info = llm_info(hf_dir, source_format="gguf", source_quantization=summary.quantization)
        log = (
            f"GGUF file ({summary.architecture}, {summary.quantization}) dequantized to float32 "
            f"with transformers in {time.perf_counter() - start:.0f} s; its dequantized weights "
            "are the reference the compressed model is measured against."
        )
    else:
        raise EngineError(f"{fmt.label} is not a language-model upload.")
    start = time.perf_counter()
    build_genai(hf_dir, dest, precision="fp32", timeout_s=deadline.left())
    built_s = time.perf_counter() - start
    sample = check_genai_folder(dest)
    log += (
        f" Exported to an onnxruntime-genai folder (float32, CPU) with its model builder in "
        f"{built_s:.0f} s; it loads in onnxruntime-genai and generated {sample[:60]!r} greedily."
    )
    write_llm_info(dest, info)
    size = folder_model_bytes(dest)
    if max_bytes is not None and size > max_bytes:
        raise EngineError(
            f"The exported model is {size / 1e6:,.1f} MB, more than the limit of "
            f"{max_bytes / 1e6:,.1f} MB."
        )
    return BuiltLlm(folder=dest, info=info, log=log)


def convert_llm(
    src: Path,
    fmt: ModelFormat,
    out_dir: Path,
    *,
    max_bytes: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> IngestResult:
    """Ingest an LLM upload: the genai folder at `out_dir/genai`, its model.onnx described."""
    from compress_engine.inspect import inspect_onnx
    from compress_engine.onnx_files import has_external_data

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / GENAI_FOLDER
    shutil.rmtree(dest, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".llm-work-", dir=out_dir) as work:
        built = build_llm(
            Path(src), fmt, dest, work=Path(work), max_bytes=max_bytes, timeout_s=timeout_s
        )
    model = dest / "model.onnx"
    # The builder writes ONNX Runtime's own ops in the default domain, which onnx.checker
    # rejects; loading and generating above is the check.
    info = inspect_onnx(model, onnx_checker=False)
    return IngestResult(
        model=model,
        info=info,
        source_format=fmt,
        external_data=has_external_data(model),
        log=built.log,
        llm=built.info,
    )


def build_from_upload(
    upload: Path,
    dest: Path,
    *,
    max_bytes: int | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """The genai folder `dest` built from an upload as it came (for the CLI, which takes the
    files users have); EngineError when it is not an HF folder zip or a GGUF file."""
    upload, dest = Path(upload), Path(dest)
    fmt = detect_format(upload, upload.name, max_bytes=max_bytes)
    if not fmt.is_llm:
        raise EngineError(
            f"{upload.name} is a {fmt.label} file, not a language model (a zipped Hugging "
            "Face causal-LM folder or a GGUF file)."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llm-work-", dir=dest.parent) as work:
        return build_llm(
            upload, fmt, dest, work=Path(work), max_bytes=max_bytes, timeout_s=timeout_s
        ).folder
