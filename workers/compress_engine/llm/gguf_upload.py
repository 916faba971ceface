"""A language model uploaded as a GGUF file (llama.cpp's format): its header read without
dequantizing anything, and the file turned into a float32 Hugging Face folder.

The conversion is transformers' GGUF loader (dequantizing every tensor to float32), run in a
child process under a time limit (`gguf_convert`). A GGUF's weights are usually already
quantized (Q4_1, Q8_0, ...): dequantized, they are the float reference everything else is
measured against, which the model's facts say (`source_quantization`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress_engine.errors import EngineError, short_message
from compress_engine.llm.child import log_tail, missing_module_in_log, run_python
from compress_engine.llm.hf_upload import builder_architectures, check_hf_folder

GGUF_MAGIC = b"GGUF"
GGUF_NAME = "model.gguf"
# Keys of transformers' GGUF mapping that are metadata sections, not architectures.
_NOT_ARCHITECTURES = {"general", "tokenizer"}


@dataclass(frozen=True)
class GgufSummary:
    """What a GGUF file's header says about the model in it."""

    architecture: str  # general.architecture, e.g. "llama"
    name: str | None  # general.name
    tensors: int
    parameters: int  # elements over all tensors (tied weights once: GGUF stores them once)
    quantization: str  # e.g. "Q4_1" (general.file_type, else the most common tensor type)
    context_length: int | None
    layers: int | None  # <arch>.block_count

    @property
    def float32_bytes(self) -> int:
        """The size of the weights once dequantized to float32."""
        return 4 * self.parameters


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def gguf_architectures() -> list[str]:
    """The GGUF architectures transformers' loader reads: the keys of its GGUF config mapping,
    which is what `modeling_gguf_pytorch_utils.GGUF_SUPPORTED_ARCHITECTURES` lists (read from
    here: that module imports torch, this one does not)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    return sorted(set(GGUF_CONFIG_MAPPING) - _NOT_ARCHITECTURES)


def read_gguf_header(path: Path) -> GgufSummary:
    """Read a GGUF file's metadata and tensor table (the tensors stay on disk, memory-mapped).

    EngineError when it is not a GGUF file or holds an architecture transformers' GGUF loader
    cannot read."""
    path = Path(path)
    if not path.is_file() or not is_gguf(path):
        raise EngineError("The file is not a GGUF file (it does not start with 'GGUF').")
    try:
        from gguf import GGUFReader
    except ImportError:
        from compress_engine.ingest.capability import missing_package_message

        raise EngineError(missing_package_message("read GGUF files", "gguf")) from None
    try:
        reader = GGUFReader(path)
        arch = str(_field(reader, "general.architecture") or "")
        summary = GgufSummary(
            architecture=arch,
            name=_optional_str(_field(reader, "general.name")),
            tensors=len(reader.tensors),
            parameters=sum(int(t.n_elements) for t in reader.tensors),
            quantization=_quantization(reader),
            context_length=_optional_int(_field(reader, f"{arch}.context_length")),
            layers=_optional_int(_field(reader, f"{arch}.block_count")),
        )
    except EngineError:
        raise
    except Exception as exc:  # a damaged or hostile header: any parser error means "broken"
        raise EngineError(f"The GGUF file cannot be read: {short_message(exc, 200)}") from None
    if not arch:
        raise EngineError("The GGUF file names no architecture (general.architecture).")
    supported = gguf_architectures()
    if arch not in supported:
        raise EngineError(
            f"The GGUF file holds a {arch!r} model, which transformers' GGUF loader cannot "
            f"read. Supported: {', '.join(supported)}. Upload the model's Hugging Face folder "
            "(safetensors) as a zip instead."
        )
    return summary


def _field(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _optional_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _quantization(reader: Any) -> str:
    """The file's weight format in llama.cpp's words ("Q4_1", "F16", "Q4_K_M")."""
    from gguf import LlamaFileType

    file_type = _field(reader, "general.file_type")
    if isinstance(file_type, int):
        try:
            return LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    # No (known) file type: the type holding most weight elements.
    counts: Counter[str] = Counter()
    for tensor in reader.tensors:
        counts[tensor.tensor_type.name] += int(tensor.n_elements)
    return counts.most_common(1)[0][0] if counts else "unknown"


def gguf_to_hf(gguf: Path, out_dir: Path, *, timeout_s: float) -> Path:
    """Dequantize the GGUF file into a float32 Hugging Face folder `out_dir` (safetensors,
    config.json, tokenizer.json) in a child process; returns `out_dir`.

    EngineError when transformers cannot load it, the builder cannot export its architecture,
    or the child runs past `timeout_s`."""
    gguf = Path(gguf).resolve()
    out_dir = Path(out_dir).resolve()
    work = out_dir.with_name(out_dir.name + ".gguf-work")
    shutil.rmtree(work, ignore_errors=True)
    try:
        _convert(gguf, out_dir, work, timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    check_hf_folder(out_dir)
    return out_dir


def _convert(gguf: Path, out_dir: Path, work: Path, timeout_s: float) -> None:
    from compress_engine.ingest.capability import missing_package_message

    # transformers loads `gguf_file` from a folder and would pick up other files lying there
    # (a tokenizer_config.json, say): the child sees a folder holding the GGUF file only.
    source = work / "source"
    source.mkdir(parents=True)
    try:
        os.symlink(gguf, source / GGUF_NAME)
    except OSError:
        shutil.copyfile(gguf, source / GGUF_NAME)
    spec = {
        "folder": str(source),
        "file": GGUF_NAME,
        "out": str(out_dir),
        "supported": sorted(builder_architectures()),
    }
    (work / "spec.json").write_text(json.dumps(spec))
    log = work / "gguf.log"
    proc = run_python(
        ["-m", "compress_engine.llm.gguf_convert", str(work / "spec.json")],
        cwd=work,
        log=log,
        timeout_s=timeout_s,
        what="GGUF conversion",
    )
    result_path = work / "result.json"
    if not result_path.is_file():
        missing = missing_module_in_log(log)
        if missing:
            raise EngineError(missing_package_message("read GGUF files", missing))
        tail = log_tail(log, 3)
        raise EngineError(
            f"The GGUF conversion process died (exit status {proc.returncode}"
            + (f": {tail})." if tail else ").")
        )
    result = json.loads(result_path.read_text())
    if "missing" in result:
        raise EngineError(missing_package_message("read GGUF files", result["missing"]))
    if "error" in result:
        raise EngineError(str(result["error"]))
