"""Recipe schema: what to do to a model, in which order, and how to evaluate it.

The web form, the API and the CLI all produce and accept this one schema. This module
imports only pydantic and yaml: the web app validates forms with it at request time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from compress_engine.errors import EngineError

# Op types that ONNX Runtime's dynamic quantizer can turn into integer kernels. Gemm is
# rewritten to MatMul + Add by ONNX Runtime first, which is how torch Linear layers get in.
DynamicOpType = Literal["MatMul", "Gemm", "Conv", "Attention", "LSTM"]

# Conv is left out of the default: dynamic ConvInteger is slow on most CPUs and the
# accuracy gain of keeping convolutions float is usually worth more than their bytes.
DEFAULT_DYNAMIC_OP_TYPES: list[DynamicOpType] = ["MatMul", "Gemm", "Attention", "LSTM"]

# Extend with "static-int8", "fp16", "weight-int4" as their passes land.
QuantizeMode = Literal["dynamic-int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QuantizeConfig(_Strict):
    """Settings of a quantize step."""

    mode: QuantizeMode = Field(
        default="dynamic-int8",
        description=(
            "Quantization scheme. dynamic-int8: weights stored as 8-bit integers, activations "
            "quantized on the fly at run time; needs no data."
        ),
    )
    per_channel: bool = Field(
        default=False,
        description=(
            "Use one scale per output channel instead of one per tensor. Usually more accurate, "
            "slightly larger."
        ),
    )
    reduce_range: bool = Field(
        default=False,
        description=(
            "Quantize weights to 7 bits. Can help accuracy on older x86 CPUs without VNNI "
            "instructions; otherwise leave off."
        ),
    )
    op_types: list[DynamicOpType] = Field(
        default_factory=lambda: list(DEFAULT_DYNAMIC_OP_TYPES),
        min_length=1,
        description=(
            "Operator types to quantize. MatMul and Gemm cover fully connected and transformer "
            "layers; Conv is opt-in (stored with uint8 weights so ONNX Runtime can run it)."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Node names to keep in float, e.g. a sensitive first or last layer.",
    )

    @model_validator(mode="after")
    def _dedupe(self) -> QuantizeConfig:
        # Order-preserving de-duplication keeps round-trips stable.
        self.op_types = list(dict.fromkeys(self.op_types))
        self.exclude = list(dict.fromkeys(self.exclude))
        return self


class QuantizeStep(_Strict):
    """A `quantize:` step."""

    quantize: QuantizeConfig = Field(
        default_factory=QuantizeConfig, description="Quantization settings."
    )


# Step kinds known to this engine version; each maps to one step model.
STEP_KINDS: tuple[str, ...] = ("quantize",)


def _check_step_shape(value: Any) -> Any:
    # Gives "unknown step 'prune'" instead of pydantic's "field required / extra forbidden".
    if isinstance(value, BaseModel):
        return value
    if not isinstance(value, Mapping) or len(value) != 1:
        raise ValueError(
            "each step must be a mapping with exactly one key, the step kind "
            f"(one of: {', '.join(STEP_KINDS)})"
        )
    (kind,) = value.keys()
    if kind not in STEP_KINDS:
        raise ValueError(f"unknown step {kind!r}; available: {', '.join(STEP_KINDS)}")
    return value


# A union of step models once prune/distill land: Annotated[QuantizeStep | PruneStep, ...].
Step = Annotated[QuantizeStep, BeforeValidator(_check_step_shape)]

ExportFormat = Literal["onnx"]

# A dimension of an input shape override.
PositiveDim = Annotated[int, Field(ge=1)]


class EvaluateConfig(_Strict):
    """How the original and the compressed model are measured and compared."""

    latency_runs: int = Field(
        default=50, ge=1, le=10_000, description="Timed inference runs per model."
    )
    warmup: int = Field(default=5, ge=0, le=1_000, description="Untimed runs before timing starts.")
    batch_size: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="Batch size used for dynamic batch dimensions when timing and comparing.",
    )
    fidelity_samples: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="Random input samples on which compressed and original outputs are compared.",
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of the random inputs, for reproducible reports."
    )
    input_shapes: dict[str, list[PositiveDim]] = Field(
        default_factory=dict,
        description=(
            "Concrete shape per input name, for inputs with dynamic dimensions other than the "
            "batch, e.g. {input_ids: [1, 128]}. Used verbatim."
        ),
    )


class Recipe(_Strict):
    """An ordered list of compression steps, export targets and an evaluation spec."""

    version: Literal[1] = Field(default=1, description="Recipe schema version.")
    steps: list[Step] = Field(min_length=1, description="Compression steps, applied in order.")
    export: list[ExportFormat] = Field(
        default_factory=lambda: ["onnx"],
        min_length=1,
        description="Artifact formats to produce.",
    )
    evaluate: EvaluateConfig = Field(
        default_factory=EvaluateConfig, description="Measurement and comparison settings."
    )

    @field_validator("steps")
    @classmethod
    def _one_quantize_step(cls, steps: list[QuantizeStep]) -> list[QuantizeStep]:
        # Quantizing an already quantized graph finds nothing to do; refuse the confusion.
        if sum(isinstance(s, QuantizeStep) for s in steps) > 1:
            raise ValueError("only one quantize step is allowed")
        return steps

    @field_validator("export")
    @classmethod
    def _dedupe_export(cls, export: list[str]) -> list[str]:
        return list(dict.fromkeys(export))

    # --- parsing and serialisation -------------------------------------------------------

    @classmethod
    def parse(cls, source: Recipe | Mapping[str, Any] | str | bytes) -> Recipe:
        """Build a recipe from a Recipe, a mapping, or YAML/JSON text.

        Raises EngineError with a readable, field-by-field message.
        """
        if isinstance(source, Recipe):
            return source
        if isinstance(source, str | bytes):
            return cls.from_yaml(source)
        if isinstance(source, Mapping):
            return cls.from_dict(source)
        raise EngineError(f"A recipe must be a mapping or YAML text, not {type(source).__name__}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise EngineError(format_validation_error(exc, "Invalid recipe")) from None

    @classmethod
    def from_yaml(cls, text: str | bytes) -> Recipe:
        # JSON is (for recipes) a subset of YAML, so this reads both.
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise EngineError(f"The recipe is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise EngineError(
                "The recipe must be a YAML mapping with at least a 'steps' key, e.g.\n"
                + default_recipe().to_yaml()
            )
        return cls.from_dict(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> Recipe:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise EngineError(f"The recipe is not valid JSON: {exc}") from None
        if not isinstance(data, Mapping):
            raise EngineError("The recipe must be a JSON object.")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def default_recipe() -> Recipe:
    """The dynamic int8 recipe with default settings."""
    return Recipe(steps=[QuantizeStep(quantize=QuantizeConfig())])


def format_validation_error(exc: ValidationError, title: str) -> str:
    """Turn a pydantic error into one line per problem, each naming its field path."""
    lines = [f"{title}:"]
    for err in exc.errors(include_url=False):
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        # "Value error, unknown step" -> "unknown step": the prefix is pydantic noise.
        msg = msg.removeprefix("Value error, ")
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            shown = repr(err["input"])
            if len(shown) <= 60:
                msg = f"{msg} (got {shown})"
        lines.append(f"- {path}: {msg}")
    return "\n".join(lines)
