"""What a language model's version page shows: its facts (ModelVersion.llm, read back through
the engine's LlmInfo) as rows of words, the chat template, and what a GGUF source means for the
figures jobs report."""

from __future__ import annotations

from dataclasses import dataclass

from registry.models import ModelVersion

_SOURCES = {
    "hf-folder": "Hugging Face folder (safetensors, zipped)",
    "gguf": "GGUF file",
    "genai-folder": "onnxruntime-genai folder",
}


@dataclass(frozen=True)
class LlmFacts:
    rows: list[tuple[str, str]]
    chat_template: str | None
    # Set for a GGUF upload: its quantized weights were dequantized, and that is the reference.
    reference_note: str | None


def llm_facts(version: ModelVersion) -> LlmFacts | None:
    """The facts of a ready language-model version; None for other models."""
    info = version.llm_info
    if info is None:
        return None
    source = _SOURCES.get(info.source_format, info.source_format)
    note = None
    if info.source_quantization:
        source += f", {info.source_quantization} weights"
        note = (
            f"The GGUF file's {info.source_quantization} weights were dequantized to float32: "
            "that float32 model is the reference every job on this version is measured against."
        )
    heads = f"{info.attention_heads} query"
    if info.kv_heads != info.attention_heads:
        heads += f", {info.kv_heads} key/value (grouped-query attention)"
    rows = [
        ("Architecture", info.architecture),
        ("Parameters", f"{info.parameters:,}"),
        ("Layers", str(info.layers)),
        ("Hidden size", str(info.hidden_size)),
        ("Attention heads", heads),
        ("Vocabulary", f"{info.vocab_size:,} tokens"),
        ("Context length", f"{info.context_length:,} tokens"),
        ("Tokenizer", info.tokenizer),
        ("Output layer", "tied to the embedding" if info.tie_word_embeddings else "its own"),
        ("Source format", source),
    ]
    return LlmFacts(rows=rows, chat_template=info.chat_template, reference_note=note)
