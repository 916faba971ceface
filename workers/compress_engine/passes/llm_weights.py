"""The language-model quantize modes as passes: their names, titles and needs for the catalog
and the web form. The work itself is the LLM pipeline's (compress_engine.llm), which runs a
whole onnxruntime-genai folder with its text windows rather than one ONNX graph."""

from __future__ import annotations

from pathlib import Path

from compress_engine.configs import LlmAutoConfig, WeightOnlyConfig
from compress_engine.errors import EngineError
from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.registry import register

_ONLY_THROUGH_COMPRESS = (
    "{mode} quantizes a language model's onnxruntime-genai folder with its text windows: run "
    "it through compress() (or `modelpress compress`) on the model folder, its zip, a Hugging "
    "Face folder zip or a .gguf file."
)


@register
class WeightOnlyQuantize(Pass[WeightOnlyConfig]):
    info = PassInfo(
        name="quantize-weight-only",
        title="Language model: weight-only int4/int8",
        stage="Quantizing (weight-only)",
        description=(
            "For causal language models: weight matrices stored as 4- or 8-bit integers in "
            "blocks (MatMulNBits, the fast form), chosen by round-to-nearest or, on "
            "calibration text, by NNCF's AWQ or GPTQ with scale estimation; chosen layers "
            "(embedding, lm_head, ...) at 8 bits. Measured on perplexity, decode speed, "
            "memory and side-by-side answers."
        ),
        step="quantize",
        mode="weight-only",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = WeightOnlyConfig

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        raise EngineError(_ONLY_THROUGH_COMPRESS.format(mode="weight-only"))


@register
class LlmAutoQuantize(Pass[LlmAutoConfig]):
    info = PassInfo(
        name="quantize-llm-auto",
        title="Language model: auto int4/int8 search",
        stage="Searching per-layer precision",
        description=(
            "For causal language models: int4 everywhere first, then the most sensitive "
            "layers moved to int8 until the perplexity budget is met within the size budget; "
            "every plan tried is reported and the best one kept."
        ),
        step="quantize",
        mode="llm-auto",
        needs_data=False,
        needs_labels=False,
        compute="light",
    )
    config_type = LlmAutoConfig

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        raise EngineError(_ONLY_THROUGH_COMPRESS.format(mode="llm-auto"))
