"""Quantize step settings: one pydantic model per `mode`, chosen by the `mode` key.

Part of the recipe schema (compress_engine.configs re-exports every name here); imports only
pydantic, like the rest of the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from compress_engine.llm_configs import LLM_MODES, LlmAutoConfig, WeightOnlyConfig

# Op types that ONNX Runtime's dynamic quantizer can turn into integer kernels. Gemm is
# rewritten to MatMul + Add by ONNX Runtime first, which is how torch Linear layers get in.
DynamicOpType = Literal["MatMul", "Gemm", "Gather", "Conv", "Attention", "LSTM"]

# Conv is left out of the default: dynamic ConvInteger is slow on most CPUs and the
# accuracy gain of keeping convolutions float is usually worth more than their bytes.
DEFAULT_DYNAMIC_OP_TYPES: list[DynamicOpType] = ["MatMul", "Gemm", "Gather", "Attention", "LSTM"]

QuantizeMode = Literal[
    "dynamic-int8", "static-int8", "fp16", "weight-int4", "auto", "weight-only", "llm-auto"
]
QUANTIZE_MODES: tuple[str, ...] = (
    "dynamic-int8",
    "static-int8",
    "fp16",
    "weight-int4",
    "auto",
    *LLM_MODES,
)

CalibrationMethod = Literal["minmax", "entropy", "percentile"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(items: list[str]) -> list[str]:
    # Order-preserving de-duplication keeps round-trips stable.
    return list(dict.fromkeys(items))


# Settings shared by the int8 modes that can search (declared once, used in each config so
# every mode keeps its own field order).
Sensitivity = Annotated[
    bool,
    Field(
        description=(
            "Also rank the quantizable layers by sensitivity: each one is quantized alone (with "
            "the bias, activation, pooling and reshape nodes that carry its output) on "
            "calibration samples, and the relative error of the first output against float32 "
            "is recorded in the report (most sensitive first). Costs one quantization per "
            "layer (at most 64 layers)."
        )
    ),
]
AccuracyAware = Annotated[
    bool,
    Field(
        description=(
            "Hold accuracy: if the fully quantized model misses the budget in evaluate "
            "(max_accuracy_drop with labels, else min_fidelity) or the quality floor, keep "
            "layers in float one more per trial, the most error removed per byte first, keeping "
            "a layer only if its trial moves the metric; stop when the budget is met or two "
            "trials in a row bring nothing. No trial may be larger than the original. Every "
            "trial is measured (metric, size, latency) and recorded; if none meets the budget "
            "the best one is kept and the report says so."
        )
    ),
]
MaxTrials = Annotated[
    int,
    Field(
        ge=1,
        le=64,
        description=(
            "accuracy_aware: at most this many trials, the fully quantized one included "
            "(each later trial keeps one more layer in float)."
        ),
    ),
]
Int8Format = Annotated[
    Literal["auto", "u8s8", "s8s8", "u8s8-reduce-range"],
    Field(
        description=(
            "Signedness of the int8 activations and weights, for ONNX Runtime's CPU kernels. "
            "auto: U8S8 (uint8 activations, int8 weights), with 7-bit weights (reduce-range) on "
            "x86 CPUs with AVX2/AVX-512 but no VNNI, where U8S8 can saturate; the report says "
            "which and why. u8s8, u8s8-reduce-range: as named. s8s8 (static-int8 only): int8 "
            "activations too, as symmetric_activations."
        )
    ),
]
SmoothQuant = Annotated[
    Literal["auto", "on", "off"],
    Field(
        description=(
            "SmoothQuant-style smoothing of MatMul/Gemm inputs: per input channel, the "
            "activation is divided and the constant weight's row multiplied by the same factor "
            "(the float model computes the same), so a few large activation channels no longer "
            "cost the others their int8 precision. Needs a dataset (activation ranges). auto: "
            "only with data, on the activations with outlier channels (largest channel at "
            "least 8x the median one), kept only if the int8 model's mean cosine to float32 on "
            "held-out calibration samples gains more than 0.0005 and more than the sample "
            "noise (both builds are in the report); on: every MatMul/Gemm input with a constant "
            "weight, outliers or not (needs data); off: never. Each smoothed input not folded "
            "into a LayerNormalization costs one Div at run time."
        )
    ),
]
SmoothQuantAlpha = Annotated[
    float | None,
    Field(
        gt=0.0,
        lt=1.0,
        description=(
            "Smoothing strength: the factor per channel is max|x|^alpha / max|w|^(1 - alpha); "
            "higher moves more of the activations' range into the weights. Unset: 0.7 with "
            "per_channel weights (one scale per output channel absorbs the moved range), 0.5 "
            "without."
        ),
    ),
]
_UNSIGNED = ("u8s8", "u8s8-reduce-range")
LatencyGate = Annotated[
    bool,
    Field(
        description=(
            "Never slower by quantizing: time the quantized model on this machine with each "
            "op type kept in float in turn (Conv split into depthwise and the rest; most "
            "multiply-accumulates first, at most 6 trials), each trial interleaved with the "
            "best build so far and an identical copy of it, and keep an op type in float only "
            "if that is faster beyond the timing noise and 5%. The result still has to meet "
            "the budget and quality floor in evaluate. Every op type timed, its ratio and the "
            "reason are in the report. `auto` does this for objective latency."
        )
    ),
]


class DynamicInt8Config(_Strict):
    """Settings of a dynamic int8 quantize step (no data needed)."""

    mode: Literal["dynamic-int8"] = Field(
        default="dynamic-int8",
        description=(
            "Quantization scheme. dynamic-int8: weights stored as 8-bit integers, activations "
            "quantized on the fly at run time; needs no data."
        ),
    )
    per_channel: bool = Field(
        # Measured on all-MiniLM-L6-v2: mean cosine to fp32 0.968 per-tensor, 0.993 per-channel.
        default=True,
        description=(
            "Use one scale per output channel instead of one per tensor. Much more accurate on "
            "transformers; slightly larger."
        ),
    )
    reduce_range: bool = Field(
        default=False,
        description=(
            "Quantize weights to 7 bits on any CPU. int8_format auto already does this where "
            "the CPU needs it (x86 without VNNI); otherwise leave off."
        ),
    )
    int8_format: Int8Format = "auto"
    op_types: list[DynamicOpType] = Field(
        default_factory=lambda: list(DEFAULT_DYNAMIC_OP_TYPES),
        min_length=1,
        description=(
            "Operator types to quantize. MatMul and Gemm cover fully connected and transformer "
            "layers; Gather covers embedding tables (stored int8, dequantized after the lookup: "
            "most of a small transformer's size); Conv is opt-in (stored with uint8 weights so "
            "ONNX Runtime can run it)."
        ),
    )
    smooth_quant: SmoothQuant = "auto"
    smooth_quant_alpha: SmoothQuantAlpha = None
    sensitivity: Sensitivity = False
    accuracy_aware: AccuracyAware = False
    max_trials: MaxTrials = 6
    latency_gate: LatencyGate = False
    exclude: list[str] = Field(
        default_factory=list,
        description="Node names to keep in float, e.g. a sensitive first or last layer.",
    )

    @model_validator(mode="after")
    def _dedupe(self) -> DynamicInt8Config:
        self.op_types = _unique(self.op_types)  # type: ignore[assignment]
        self.exclude = _unique(self.exclude)
        return self

    @model_validator(mode="after")
    def _format_agrees(self) -> DynamicInt8Config:
        if self.int8_format == "s8s8":
            raise ValueError(
                "int8_format s8s8 needs static-int8: dynamic int8 quantizes activations to "
                "uint8 at run time"
            )
        if self.int8_format in _UNSIGNED and "Conv" in self.op_types:
            raise ValueError(
                f"int8_format {self.int8_format} stores int8 weights, but op_types includes "
                "Conv, whose weights dynamic int8 stores as uint8; use auto"
            )
        if self.reduce_range and self.int8_format == "u8s8":
            raise ValueError(
                "reduce_range (7-bit weights) contradicts int8_format u8s8 (8-bit weights); use "
                "u8s8-reduce-range or auto"
            )
        return self


class StaticInt8Config(_Strict):
    """Settings of a static int8 quantize step: activation ranges come from calibration data."""

    mode: Literal["static-int8"] = Field(
        description=(
            "Quantization scheme. static-int8: weights and activations stored as 8-bit integers "
            "(QDQ format), activation ranges measured on calibration data beforehand; needs a "
            "dataset. Usually the fastest int8 on CPUs, also for convolutions."
        ),
    )
    per_channel: bool = Field(
        default=True,
        description=(
            "One weight scale per output channel instead of one per tensor. Keeps accuracy "
            "much better on convolutions; models below opset 13 are upgraded for it."
        ),
    )
    symmetric_weights: bool = Field(
        default=True,
        description="Symmetric int8 weights (zero point 0), what most int8 kernels expect.",
    )
    symmetric_activations: bool = Field(
        default=False,
        description=(
            "Symmetric int8 activations instead of asymmetric uint8 (int8_format s8s8). Some "
            "NPUs and GPUs want this; on CPUs asymmetric uint8 is usually at least as accurate."
        ),
    )
    int8_format: Int8Format = "auto"
    calibration: CalibrationMethod = Field(
        default="percentile",
        description=(
            "How activation ranges are chosen from the calibration data. minmax: the full "
            "observed range (sensitive to outliers); entropy: minimises the information lost "
            "(KL divergence); percentile: clips the extreme tail (see `percentile`)."
        ),
    )
    percentile: float = Field(
        default=99.999,
        gt=90.0,
        le=100.0,
        description=(
            "For calibration: percentile, the percentile of activation values kept; values "
            "beyond it (the extreme tail) are clipped."
        ),
    )
    samples: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Calibration samples drawn from the dataset's calibration split.",
    )
    bias_correction: Literal["auto", "on", "off"] = Field(
        default="auto",
        description=(
            "Bias correction for depthwise convolutions, whose few weights per channel round "
            "to a systematic output shift: each one's mean error against float32 is measured "
            "on calibration samples (in graph order, the earlier ones already corrected) and "
            "removed from its bias. auto: only for models with depthwise convolutions, and kept "
            "only if it removes at least 5% of the error in the mean cosine to float32 on "
            "held-out calibration samples (both builds are in the report); on: always; off: "
            "never."
        ),
    )
    smooth_quant: SmoothQuant = "auto"
    smooth_quant_alpha: SmoothQuantAlpha = None
    split_mixed_ranges: bool = Field(
        default=True,
        description=(
            "Keep in float a Concat that feeds an output and joins inputs whose calibrated "
            "ranges differ more than 16x (a detector head joining box coordinates with 0..1 "
            "scores), with the nodes carrying it to the output: one int8 scale for the joined "
            "tensor would leave the small input under 16 of 256 levels. Each input keeps its "
            "own scale; the measured ranges are in the report."
        ),
    )
    sensitivity: Sensitivity = False
    accuracy_aware: AccuracyAware = False
    max_trials: MaxTrials = 6
    latency_gate: LatencyGate = False
    exclude: list[str] = Field(
        default_factory=list,
        description="Node names to keep in float, e.g. a sensitive first or last layer.",
    )
    exclude_op_types: list[str] = Field(
        default_factory=list,
        description="Operator types to keep in float everywhere, e.g. [Softmax, Add].",
    )

    @model_validator(mode="after")
    def _dedupe(self) -> StaticInt8Config:
        self.exclude = _unique(self.exclude)
        self.exclude_op_types = _unique(self.exclude_op_types)
        return self

    @model_validator(mode="after")
    def _format_agrees(self) -> StaticInt8Config:
        if self.symmetric_activations and self.int8_format in _UNSIGNED:
            raise ValueError(
                f"symmetric_activations (int8 activations) contradicts int8_format "
                f"{self.int8_format} (uint8 activations); use s8s8 or auto"
            )
        return self


class Fp16Config(_Strict):
    """Settings of a float16 conversion step."""

    mode: Literal["fp16"] = Field(
        description=(
            "Quantization scheme. fp16: weights and arithmetic in 16-bit floats; half the size, "
            "near-identical outputs. Meant for GPUs and NPUs; on CPUs it is usually slower."
        ),
    )
    keep_io_types: bool = Field(
        default=True,
        description=(
            "Keep the model's inputs and outputs float32 (casts are inserted inside), so "
            "callers need no change. Off: inputs and outputs become float16."
        ),
    )
    op_block_list: list[str] = Field(
        default_factory=list,
        description=(
            "Extra operator types to keep in float32, on top of the built-in list of ops that "
            "are unsafe or unsupported in float16 (e.g. Resize, TopK, Range)."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Node names to keep in float32, e.g. a layer whose values overflow fp16.",
    )

    @model_validator(mode="after")
    def _dedupe(self) -> Fp16Config:
        self.op_block_list = _unique(self.op_block_list)
        self.exclude = _unique(self.exclude)
        return self


class WeightInt4Config(_Strict):
    """Settings of a weight-only int4 quantize step."""

    mode: Literal["weight-int4"] = Field(
        description=(
            "Quantization scheme. weight-int4: MatMul (and plain Gemm) weights stored as 4-bit "
            "integers in blocks, activations stay float; about 7x smaller weights, no data "
            "needed. For large fully connected and transformer models."
        ),
    )
    block_size: int = Field(
        default=32,
        ge=16,
        le=4096,
        description=(
            "Weights per scale along the input dimension: a power of two, at least 16. Smaller "
            "blocks are more accurate and slightly larger."
        ),
    )
    symmetric: bool = Field(
        default=True,
        description="Symmetric int4 blocks (no zero points): smaller and faster, usually as good.",
    )
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        default=None,
        description=(
            "Minimum precision of the activations inside the int4 MatMul on CPU: 0 unset, 1 "
            "fp32, 2 fp16, 3 bf16, 4 int8 (fastest). Unset lets ONNX Runtime choose."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Node names to keep in float, e.g. the final classifier.",
    )

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two (16, 32, 64, 128, ...)")
        return value

    @model_validator(mode="after")
    def _dedupe(self) -> WeightInt4Config:
        self.exclude = _unique(self.exclude)
        return self


class AutoConfig(_Strict):
    """Settings of an automatic quantize step: the engine picks the mode by measuring."""

    mode: Literal["auto"] = Field(
        description=(
            "Quantization scheme. auto: tries the int8 modes that suit the model (by where its "
            "multiply-accumulates are: convolutions or matrix products; static int8 only with "
            "a dataset), measures each against the original on this machine, and keeps the "
            "best one within the budget in evaluate; if none is better, the original is kept "
            "unchanged and the report says why."
        ),
    )
    objective: Literal["latency", "size"] = Field(
        default="latency",
        description=(
            "What `better` means: latency (median at the first batch size, at least 5% faster "
            "and beyond the noise an identical copy of the original measures) or size (file at "
            "least 5% smaller). Either way a variant slower than the original beyond that noise "
            "is never picked."
        ),
    )


TUNABLE_CONFIGS = (DynamicInt8Config, StaticInt8Config)


CONFIG_BY_MODE: dict[str, type[BaseModel]] = {
    "dynamic-int8": DynamicInt8Config,
    "static-int8": StaticInt8Config,
    "fp16": Fp16Config,
    "weight-int4": WeightInt4Config,
    "auto": AutoConfig,
    "weight-only": WeightOnlyConfig,
    "llm-auto": LlmAutoConfig,
}
INVALID_MODE = "invalid_quantize_mode"


def _quantize_mode(value: Any) -> str | None:
    # `mode` may be left out for dynamic-int8, the original and default scheme.
    mode = (
        value.get("mode", "dynamic-int8")
        if isinstance(value, Mapping)
        else getattr(value, "mode", None)
    )
    return mode if mode in CONFIG_BY_MODE else None


QuantizeConfig = Annotated[
    Annotated[DynamicInt8Config, Tag("dynamic-int8")]
    | Annotated[StaticInt8Config, Tag("static-int8")]
    | Annotated[Fp16Config, Tag("fp16")]
    | Annotated[WeightInt4Config, Tag("weight-int4")]
    | Annotated[AutoConfig, Tag("auto")]
    | Annotated[WeightOnlyConfig, Tag("weight-only")]
    | Annotated[LlmAutoConfig, Tag("llm-auto")],
    Discriminator(
        _quantize_mode,
        custom_error_type=INVALID_MODE,
        custom_error_message="Input should be " + ", ".join(f"'{m}'" for m in QUANTIZE_MODES),
    ),
]
"""Settings of a quantize step: one model per `mode`, chosen by the `mode` key."""

QUANTIZE_CONFIGS: tuple[type[BaseModel], ...] = tuple(CONFIG_BY_MODE.values())
