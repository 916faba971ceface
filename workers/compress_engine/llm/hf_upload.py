"""A Hugging Face causal language model uploaded as a zip of its folder, checked before
anything loads it.

The zip is untrusted: the archive checks of `compress_engine.archives` run first, and the
folder must hold what onnxruntime-genai's model builder needs and nothing that would be
unpickled: `config.json` naming a causal-LM architecture the builder exports, the weights as
`*.safetensors` (every shard a sharded model's index names), and `tokenizer.json`. The folder
may sit at the zip's root or inside one top-level folder.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from compress_engine.archives import ZIP_ERRORS, check_members, extract_checked, is_metadata
from compress_engine.errors import EngineError

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt", ".pickle")
# config.json and the shard index are small; anything far larger is not one.
MAX_JSON_BYTES = 32 * 1024**2
SAVE_SAFE = (
    "Save the model with model.save_pretrained(folder) (transformers 5 writes safetensors; "
    "with 4.x pass safe_serialization=True) and tokenizer.save_pretrained(folder), then zip "
    "that folder."
)
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.safetensors$")
# onnxruntime-genai's builder picks its exporter with `config.architectures[0] == "..."`.
_DISPATCH = re.compile(r"""config\.architectures\[0\]\s*==\s*["']([A-Za-z0-9_]+)["']""")

ReadJson = Callable[[str], Any]


@functools.cache
def builder_architectures() -> frozenset[str]:
    """The causal-LM classes onnxruntime-genai's model builder exports, read from its own
    architecture dispatch (models/builder.py) so the list cannot drift from the installed
    version. Multimodal `*ForConditionalGeneration` entries are left out: ModelPress measures
    text decoders only."""
    from compress_engine.ingest.capability import missing_package_message

    spec = importlib.util.find_spec("onnxruntime_genai")  # finds, does not import
    locations = list(spec.submodule_search_locations or []) if spec else []
    source = Path(locations[0]) / "models" / "builder.py" if locations else None
    if source is None or not source.is_file():
        raise EngineError(missing_package_message("export language models", "onnxruntime_genai"))
    found = _DISPATCH.findall(source.read_text(encoding="utf-8"))
    return frozenset(a for a in found if a.endswith("ForCausalLM"))


def check_hf_config(config: Any) -> str:
    """The architecture class `config.json` names; EngineError unless the builder exports it
    and its weights are plain floats."""
    if not isinstance(config, dict):
        raise EngineError("config.json is not a JSON object. " + SAVE_SAFE)
    names = config.get("architectures")
    model_type = str(config.get("model_type") or "unknown")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise EngineError(
            f"config.json names no architecture (its 'architectures' list is empty; model_type "
            f"{model_type!r}). Save the model from its causal-LM class (e.g. "
            "AutoModelForCausalLM.from_pretrained(...).save_pretrained(folder))."
        )
    arch = names[0]
    supported = builder_architectures()
    if arch not in supported:
        known = ", ".join(sorted(supported))
        if not arch.endswith(("ForCausalLM", "LMHeadModel")):
            raise EngineError(
                f"config.json names {arch} (model_type {model_type!r}), which is not a causal "
                "language model (a *ForCausalLM class); ModelPress compresses text decoders. "
                f"Supported: {known}."
            )
        raise EngineError(
            f"onnxruntime-genai's model builder cannot export {arch} (model_type "
            f"{model_type!r}). It exports: {known}."
        )
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else "unknown"
        raise EngineError(
            f"The checkpoint's weights are already quantized (quantization_config: {method}). "
            "Upload the unquantized (float) checkpoint, so there is a float reference to "
            "measure the compressed model against."
        )
    return arch


def check_hf_files(names: list[str], read_json: ReadJson) -> str:
    """Check a folder's file list (paths relative to the folder holding config.json) and its
    JSON files (`read_json(name)`); returns the architecture class."""
    pickles = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
    if pickles:
        shown = _some(pickles)
        raise EngineError(
            f"The upload holds pickled files ({shown}). Pickles can run arbitrary code when "
            f"loaded, so ModelPress never loads them. {SAVE_SAFE} Leave .bin/.pt files out "
            "of the zip."
        )
    if CONFIG not in names:
        raise EngineError(
            "The zip holds no config.json at its root or in its one top-level folder. " + SAVE_SAFE
        )
    arch = check_hf_config(read_json(CONFIG))
    weights = [n for n in names if n.endswith(".safetensors")]
    if not weights:
        raise EngineError("The zip holds no *.safetensors weights. " + SAVE_SAFE)
    _check_shards(names, weights, read_json)
    if TOKENIZER not in names:
        raise EngineError(
            "The zip holds no tokenizer.json, which onnxruntime-genai needs. Save the fast "
            "tokenizer beside the model: "
            "AutoTokenizer.from_pretrained(...).save_pretrained(folder)."
        )
    return arch


def _check_shards(names: list[str], weights: list[str], read_json: ReadJson) -> None:
    present = set(names)
    if INDEX in present:
        index = read_json(INDEX)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise EngineError(f"{INDEX} has no weight_map. " + SAVE_SAFE)
        shards = sorted({str(v) for v in weight_map.values()})
        missing = [s for s in shards if s not in present]
    else:
        # Shards named model-0000i-of-0000n without their index: transformers cannot load them.
        shards = sorted(w for w in weights if _SHARD.search(w))
        if not shards:
            return
        missing = [f"{INDEX} (the shard index)"]
    if missing:
        shown = _some(missing)
        raise EngineError(
            f"The model is sharded into {len(shards)} safetensors files, but the zip lacks "
            f"{shown}. Zip the whole folder save_pretrained wrote."
        )


def _some(names: list[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def model_root(files: list[str]) -> str:
    """The folder (as a member-name prefix, '' or 'name/') that holds config.json."""
    if CONFIG in files:
        return ""
    tops = {PurePosixPath(n).parts[0] for n in files}
    if len(tops) == 1:
        top = next(iter(tops))
        if f"{top}/{CONFIG}" in files:
            return f"{top}/"
    return ""


def _read_member(zf: zipfile.ZipFile, name: str) -> Any:
    info = zf.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise EngineError(f"{name} is {info.file_size / 1e6:.0f} MB, too large to be one.")
    try:
        return json.loads(zf.read(info))
    except (ValueError, UnicodeDecodeError):
        raise EngineError(f"The zip's {name} is not valid JSON.") from None


def check_hf_archive(zf: zipfile.ZipFile, max_bytes: int | None) -> tuple[str, list[str]]:
    """Check an open HF-folder zip: archive safety, then its contents. Returns the member
    prefix of the model folder ('' or 'top/') and the member names (files only)."""
    infos = [i for i in zf.infolist() if not i.is_dir() and not is_metadata(i.filename)]
    check_members(infos, max_bytes)
    files = [i.filename for i in infos]
    root = model_root(files)
    # Every member lies under the root (model_root picks a top folder only when all do).
    inner = [n[len(root) :] for n in files]
    check_hf_files(inner, lambda name: _read_member(zf, root + name))
    return root, files


def check_hf_zip(path: Path, *, max_bytes: int | None) -> list[str]:
    """Check a zip of a Hugging Face causal-LM folder without extracting it; returns its
    member names. EngineError says what is wrong and how to save the model instead."""
    try:
        with zipfile.ZipFile(path) as zf:
            return check_hf_archive(zf, max_bytes)[1]
    except ZIP_ERRORS:
        raise EngineError("The file looks like a zip archive but cannot be read.") from None


def unpack_hf_zip(path: Path, dest: Path, *, max_bytes: int | None) -> Path:
    """Check, then extract the zip into `dest`; returns the folder holding config.json."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(path) as zf:
            root, _ = check_hf_archive(zf, max_bytes)
            extract_checked(zf, dest, max_bytes)
    except ZIP_ERRORS:
        raise EngineError("The file looks like a zip archive but cannot be read.") from None
    return dest / root.rstrip("/") if root else dest


def check_hf_folder(folder: Path) -> str:
    """The same checks on a folder on disk (e.g. one dequantized from a GGUF file); returns
    the architecture class."""
    folder = Path(folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def read(name: str) -> Any:
        try:
            return json.loads((folder / name).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise EngineError(f"The model folder's {name} is not valid JSON.") from None

    return check_hf_files(names, read)
