"""Recipe settings for language models: the `weight-only` and `llm-auto` quantize modes and the
`evaluate.llm` section (perplexity windows, decode timing, prompts).

Part of the recipe schema (compress_engine.configs re-exports every name here); imports only
pydantic, like the rest of the schema.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# GPTQ is not offered: NNCF 3.4's ONNX backend refuses it, and ONNX Runtime's GPTQ (Intel
# Neural Compressor's port) measured +87% perplexity on SmolLM2-135M, worse than round to
# nearest (+35%), so it would be a choice that only loses.
WeightMethod = Literal["rtn", "awq"]
LLM_MODES: tuple[str, ...] = ("weight-only", "llm-auto")

# Layer selectors of a per-layer precision plan; a node name or a glob also works.
LAYER_SELECTORS: tuple[str, ...] = (
    "embedding",
    "lm_head",
    "first_block",
    "last_block",
    "attention",
    "mlp",
    "block:N",
)
DEFAULT_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in two sentences why the sky is blue.",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _power_of_two(value: int) -> int:
    if value & (value - 1):
        raise ValueError("must be a power of two (16, 32, 64, 128, ...)")
    return value


_SELECTOR_HELP = (
    "Selectors: embedding, lm_head, first_block, last_block, attention, mlp, block:N (the "
    "N-th transformer block, from 0), or an ONNX node name or glob such as "
    "'/model/layers.3/mlp/*'."
)


class WeightOnlyConfig(_Strict):
    """Settings of a weight-only quantize step for a language model."""

    mode: Literal["weight-only"] = Field(
        description=(
            "Quantization scheme for language models. weight-only: the weight matrices are "
            "stored as 4- or 8-bit integers in blocks (ONNX Runtime's MatMulNBits, the fast "
            "form on CPU and GPU); activations and the KV cache stay float."
        ),
    )
    bits: Literal[4, 8] = Field(
        default=4, description="Bits per weight of every matrix not listed in int8 or float."
    )
    method: WeightMethod = Field(
        default="awq",
        description=(
            "How the integer weights are chosen. rtn: round to nearest (no data, fastest to "
            "run). awq: NNCF's activation-aware scaling with scale estimation, on calibration "
            "text (your dataset's, or the bundled prose). awq applies to 4-bit weights; both "
            "deliver MatMulNBits."
        ),
    )
    block_size: int = Field(
        default=32,
        ge=16,
        le=1024,
        description="Weights per scale along the input dimension (a power of two, at least 16).",
    )
    symmetric: bool = Field(
        default=True,
        description=(
            "Symmetric blocks (no zero points). Asymmetric blocks keep a zero point per block: "
            "slightly larger, sometimes more accurate."
        ),
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        default=4,
        description=(
            "Precision of the activations inside MatMulNBits on CPU: 0 unset, 1 fp32, 2 fp16, "
            "3 bf16, 4 int8 (fastest). null lets ONNX Runtime choose, which on CPU measured "
            "about a third of level 4's decode speed on SmolLM2-135M (close to fp32's)."
        ),
    )
    int8: list[str] = Field(
        default_factory=lambda: ["embedding", "lm_head"],
        description=(
            "Layers stored at 8 bits when `bits` is 4 (the most error-prone ones). "
            + _SELECTOR_HELP
        ),
    )
    float_layers: list[str] = Field(
        default_factory=list,
        description="Layers kept in float. " + _SELECTOR_HELP,
    )
    calibration_windows: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Windows of calibration text awq sees.",
    )

    @field_validator("block_size")
    @classmethod
    def _block_power_of_two(cls, value: int) -> int:
        return _power_of_two(value)

    @model_validator(mode="after")
    def _dedupe(self) -> WeightOnlyConfig:
        self.int8 = _unique(self.int8)
        self.float_layers = _unique(self.float_layers)
        return self

    @property
    def calibrated(self) -> bool:
        """Uses calibration text (a dataset's, or the bundled prose without one)."""
        return self.method != "rtn" and self.bits == 4


class LlmAutoConfig(_Strict):
    """Settings of the language-model auto search: per-layer int4/int8 under two budgets."""

    mode: Literal["llm-auto"] = Field(
        description=(
            "Quantization scheme for language models. llm-auto: starts from int4 everywhere "
            "(with `method`) and moves the most sensitive layers to int8 one group at a time "
            "until the perplexity budget (evaluate.llm.max_perplexity_increase) is met within "
            "the size budget; every plan tried is in the report, and the best one is kept."
        ),
    )
    method: WeightMethod = Field(
        default="awq", description="How the int4 weights are chosen (see weight-only)."
    )
    block_size: int = Field(
        default=32, ge=16, le=1024, description="Weights per scale (a power of two)."
    )
    symmetric: bool = Field(default=True, description="Symmetric blocks (no zero points).")
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        default=4, description="Precision of the activations inside MatMulNBits on CPU."
    )
    max_size_ratio: float = Field(
        default=0.19,
        gt=0.0,
        le=1.0,
        description="Size budget: model files / the original's (0.19 = at least 5.3x smaller).",
    )
    max_trials: int = Field(
        default=6, ge=1, le=32, description="Plans tried at most (each one is a quantization)."
    )
    calibration_windows: int = Field(
        default=32, ge=1, le=1024, description="Windows of calibration text (awq)."
    )

    @field_validator("block_size")
    @classmethod
    def _block_power_of_two(cls, value: int) -> int:
        return _power_of_two(value)

    @property
    def calibrated(self) -> bool:
        """Uses calibration text (a dataset's, or the bundled prose without one)."""
        return self.method != "rtn"


class LlmEvaluateConfig(_Strict):
    """How a language model and its compressed version are measured."""

    window_tokens: int = Field(
        default=256, ge=16, le=8192, description="Tokens per perplexity window."
    )
    evaluation_windows: int = Field(
        default=16, ge=1, le=1024, description="Windows perplexity is measured on."
    )
    decode_tokens: int = Field(
        default=64, ge=4, le=2048, description="Tokens generated per decode-speed round."
    )
    decode_rounds: int = Field(
        default=6,
        ge=2,
        le=100,
        description="Rounds timed per model, interleaved original/compressed.",
    )
    answer_tokens: int = Field(
        default=48, ge=1, le=1024, description="Most tokens per answer to the prompts."
    )
    prompts: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PROMPTS),
        max_length=8,
        description="Prompts both models answer side by side in the report.",
    )
    max_perplexity_increase: float | None = Field(
        default=10.0,
        ge=0.0,
        le=1000.0,
        description=(
            "Budget: perplexity increase in percent that the compressed model may show "
            "(llm-auto searches for it; other modes flag a miss in the report)."
        ),
    )
    measure_memory: bool = Field(
        default=True,
        description="Measure peak resident memory of a process generating with each model.",
    )
