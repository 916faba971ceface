"""The facts of a Hugging Face causal LM (`LlmInfo`), read from its folder's JSON files and the
safetensors headers: nothing is imported from transformers and no tensor is loaded.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from compress_engine.errors import EngineError
from compress_engine.llm.hf_upload import CONFIG, INDEX, TOKENIZER
from compress_engine.report_llm import LlmInfo, LlmSource

# A safetensors file starts with the byte length of its JSON header (u64, little-endian).
MAX_HEADER_BYTES = 100 * 1024**2
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def llm_info(
    hf_dir: Path, *, source_format: LlmSource, source_quantization: str | None = None
) -> LlmInfo:
    """Describe the model in `hf_dir` (config.json, tokenizer files, safetensors headers)."""
    hf_dir = Path(hf_dir)
    config = _read_json(hf_dir / CONFIG)
    # Multimodal-style configs keep the decoder's numbers in text_config.
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}

    def get(*keys: str) -> Any:
        for key in keys:
            for source in (config, text):
                if source.get(key) is not None:
                    return source[key]
        return None

    heads = int(get("num_attention_heads", "n_head") or 0)
    return LlmInfo(
        architecture=str(config.get("model_type") or text.get("model_type") or "unknown"),
        parameters=count_parameters(hf_dir),
        layers=int(get("num_hidden_layers", "n_layer") or 0),
        hidden_size=int(get("hidden_size", "n_embd") or 0),
        attention_heads=heads,
        kv_heads=int(get("num_key_value_heads") or heads),
        vocab_size=int(get("vocab_size") or 0),
        context_length=int(get(*_CONTEXT_KEYS) or 0),
        tokenizer=describe_tokenizer(hf_dir / TOKENIZER),
        chat_template=chat_template(hf_dir),
        source_format=source_format,
        source_quantization=source_quantization,
        tie_word_embeddings=bool(get("tie_word_embeddings")),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"The model folder has no {path.name}.") from None
    except (ValueError, UnicodeDecodeError):
        raise EngineError(f"The model folder's {path.name} is not valid JSON.") from None
    if not isinstance(data, dict):
        raise EngineError(f"The model folder's {path.name} is not a JSON object.")
    return data


def weight_files(hf_dir: Path) -> list[Path]:
    """The safetensors files holding the model: the shards its index names, else
    model.safetensors, else every *.safetensors at the top of the folder."""
    hf_dir = Path(hf_dir)
    if (hf_dir / INDEX).is_file():
        weight_map = _read_json(hf_dir / INDEX).get("weight_map") or {}
        return [hf_dir / name for name in sorted({str(v) for v in weight_map.values()})]
    if (hf_dir / "model.safetensors").is_file():
        return [hf_dir / "model.safetensors"]
    return sorted(hf_dir.glob("*.safetensors"))


def count_parameters(hf_dir: Path) -> int:
    """Elements of every tensor in the weight files, read from their headers (a tied
    lm_head is stored once, so it counts once)."""
    return sum(
        math.prod(int(d) for d in entry["shape"])
        for path in weight_files(hf_dir)
        for name, entry in safetensors_header(path).items()
        if name != "__metadata__"
    )


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: tensor name -> {dtype, shape, data_offsets}."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise EngineError(f"{path.name} is not a safetensors file (it is too short).")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER_BYTES:
            raise EngineError(f"{path.name} is not a safetensors file (its header is too long).")
        try:
            header = json.loads(fh.read(length))
        except (ValueError, UnicodeDecodeError):
            raise EngineError(f"{path.name} is not a safetensors file (bad header).") from None
    if not isinstance(header, dict) or not all(
        name == "__metadata__"
        or (
            isinstance(entry, dict)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in entry["shape"])
        )
        for name, entry in header.items()
    ):
        raise EngineError(f"{path.name} is not a safetensors file (bad header).")
    return header


def describe_tokenizer(path: Path) -> str:
    """ "BPE, 49152 tokens": the tokenizer.json model's type and its vocabulary with the added
    tokens."""
    data = _read_json(path)
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    kind = str(model.get("type") or "unknown")
    vocab = model.get("vocab")
    size = len(vocab) if isinstance(vocab, dict | list) else 0
    if isinstance(vocab, dict):
        added = data.get("added_tokens") or []
        size += sum(1 for t in added if isinstance(t, dict) and t.get("content") not in vocab)
    return f"{kind}, {size} tokens"


def chat_template(hf_dir: Path) -> str | None:
    """The chat template: chat_template.jinja (transformers 5), else the one in
    tokenizer_config.json or chat_template.json (the named "default" one of a list)."""
    hf_dir = Path(hf_dir)
    jinja = hf_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8", errors="replace") or None
    for name in ("tokenizer_config.json", "chat_template.json"):
        if (hf_dir / name).is_file():
            template = _read_json(hf_dir / name).get("chat_template")
            if isinstance(template, list):
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template = named.get("default") or next(iter(named.values()), None)
            if isinstance(template, str) and template:
                return template
    return None


# The model's facts travel inside its genai folder (and the zip the platform stores), so a
# run reads what the upload was (a GGUF's quantization) without the platform's database.
INFO_FILE = "modelpress_llm.json"


def write_llm_info(folder: Path, info: LlmInfo) -> None:
    (Path(folder) / INFO_FILE).write_text(info.model_dump_json(indent=2), encoding="utf-8")


def read_llm_info(folder: Path) -> LlmInfo:
    """The facts written at ingest; for a genai folder made elsewhere, what its
    genai_config.json, tokenizer and initializers tell."""
    folder = Path(folder)
    path = folder / INFO_FILE
    if path.is_file():
        try:
            return LlmInfo.model_validate_json(path.read_text(encoding="utf-8"))
        except ValueError:
            pass  # unreadable: described from the folder instead
    return _genai_folder_info(folder)


def _genai_folder_info(folder: Path) -> LlmInfo:
    import onnx

    model = _read_json(folder / "genai_config.json").get("model", {})
    decoder = model.get("decoder", {})
    graph = onnx.load(str(folder / decoder.get("filename", "model.onnx")), load_external_data=False)
    parameters = sum(math.prod(t.dims) for t in graph.graph.initializer)
    return LlmInfo(
        architecture=str(model.get("type", "unknown")),
        parameters=parameters,
        layers=int(decoder.get("num_hidden_layers", 0)),
        hidden_size=int(decoder.get("hidden_size", 0)),
        attention_heads=int(decoder.get("num_attention_heads", 0)),
        kv_heads=int(decoder.get("num_key_value_heads", 0)),
        vocab_size=int(model.get("vocab_size", 0)),
        context_length=int(model.get("context_length", 0)),
        tokenizer=describe_tokenizer(folder / TOKENIZER),
        chat_template=chat_template(folder),
        source_format="genai-folder",
    )
