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
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from compress_engine.errors import EngineError
from compress_engine.export_configs import ExportFormat, TfliteConfig
from compress_engine.llm_configs import (
    LLM_MODES,
    LlmAutoConfig,
    LlmEvaluateConfig,
    WeightMethod,
    WeightOnlyConfig,
)
from compress_engine.quality_configs import QualityFloor
from compress_engine.quantize_configs import (
    CONFIG_BY_MODE,
    DEFAULT_DYNAMIC_OP_TYPES,
    INVALID_MODE,
    QUANTIZE_CONFIGS,
    QUANTIZE_MODES,
    TUNABLE_CONFIGS,
    AccuracyAware,
    AutoConfig,
    CalibrationMethod,
    DynamicInt8Config,
    DynamicOpType,
    Fp16Config,
    MaxTrials,
    QuantizeConfig,
    QuantizeMode,
    Sensitivity,
    StaticInt8Config,
    WeightInt4Config,
)
from compress_engine.torch_configs import DistillConfig, FinetuneConfig, PruneConfig

# The recipe types' one door: the web imports every recipe type from here, wherever the
# schema keeps it (quantize, torch-side and export settings live in their own modules).
__all__ = [
    "DEFAULT_DYNAMIC_OP_TYPES",
    "LLM_MODES",
    "QUANTIZE_CONFIGS",
    "QUANTIZE_MODES",
    "STEP_KINDS",
    "TORCH_STEP_KINDS",
    "TUNABLE_CONFIGS",
    "AccuracyAware",
    "AutoConfig",
    "CalibrationMethod",
    "DistillConfig",
    "DistillStep",
    "DynamicInt8Config",
    "DynamicOpType",
    "EvaluateConfig",
    "ExportFormat",
    "FinetuneConfig",
    "FinetuneStep",
    "Fp16Config",
    "LlmAutoConfig",
    "LlmEvaluateConfig",
    "MaxTrials",
    "PositiveDim",
    "PruneConfig",
    "PruneStep",
    "QualityFloor",
    "QuantizeConfig",
    "QuantizeMode",
    "QuantizeStep",
    "Recipe",
    "Sensitivity",
    "StaticInt8Config",
    "Step",
    "TfliteConfig",
    "WeightInt4Config",
    "WeightMethod",
    "WeightOnlyConfig",
    "default_recipe",
    "format_validation_error",
    "step_kind",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _unique(items: list[str]) -> list[str]:
    # Order-preserving de-duplication keeps round-trips stable.
    return list(dict.fromkeys(items))


class QuantizeStep(_Strict):
    """A `quantize:` step."""

    quantize: QuantizeConfig = Field(
        default_factory=DynamicInt8Config,
        description="Quantization settings; `mode` picks the scheme and its settings.",
    )


class PruneStep(_Strict):
    """A `prune:` step."""

    prune: PruneConfig = Field(
        default_factory=PruneConfig, description="Pruning settings; `method` picks the kind."
    )


class DistillStep(_Strict):
    """A `distill:` step."""

    distill: DistillConfig = Field(
        default_factory=DistillConfig,
        description="Knowledge distillation: the current model learns to imitate a teacher.",
    )


class FinetuneStep(_Strict):
    """A `finetune:` step."""

    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig,
        description="Plain fine-tuning on the dataset's labels (cross-entropy).",
    )


# Step kinds known to this engine version; each maps to one step model.
_STEP_MODELS: dict[str, type[BaseModel]] = {
    "prune": PruneStep,
    "distill": DistillStep,
    "finetune": FinetuneStep,
    "quantize": QuantizeStep,
}
STEP_KINDS: tuple[str, ...] = tuple(_STEP_MODELS)
# Steps that run on a torch module rebuilt from the ONNX graph; they must come before any
# quantize step (a quantized graph cannot be rebuilt as a trainable module).
TORCH_STEP_KINDS: tuple[str, ...] = ("prune", "distill", "finetune")


def step_kind(step: BaseModel) -> str:
    """The recipe key of a step model ('prune', 'quantize', ...)."""
    (kind,) = type(step).model_fields
    return kind


def _check_step_shape(value: Any) -> Any:
    # Gives "unknown step 'pruning'" instead of pydantic's "field required / extra forbidden".
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


def _step_tag(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return next(iter(value), None)
    return step_kind(value) if isinstance(value, BaseModel) else None


Step = Annotated[
    Annotated[PruneStep, Tag("prune")]
    | Annotated[DistillStep, Tag("distill")]
    | Annotated[FinetuneStep, Tag("finetune")]
    | Annotated[QuantizeStep, Tag("quantize")],
    Discriminator(_step_tag),
    BeforeValidator(_check_step_shape),
]

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
    image_mean: list[float] = Field(
        default_factory=lambda: [0.0],
        min_length=1,
        max_length=3,
        description=(
            "Image-folder datasets (.zip): per-channel mean subtracted after pixels are scaled "
            "to [0, 1] (one value, or one per channel; ImageNet models: [0.485, 0.456, 0.406])."
        ),
    )
    image_std: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0],
        min_length=1,
        max_length=3,
        description=(
            "Image-folder datasets (.zip): per-channel standard deviation divided by after the "
            "mean is subtracted (ImageNet models: [0.229, 0.224, 0.225])."
        ),
    )
    input_shapes: dict[str, list[PositiveDim]] = Field(
        default_factory=dict,
        description=(
            "Concrete shape per input name, for inputs with dynamic dimensions other than the "
            "batch, e.g. {input_ids: [1, 128]}. Used verbatim."
        ),
    )
    sample_axis: dict[str, int] = Field(
        default_factory=dict,
        description=(
            "With a dataset: the axis holding the samples of arrays whose samples are not on "
            "axis 0, e.g. {state: 1} for a state stored [2, samples, 128]; batches are cut "
            "along it. Overrides the dataset's `__modelpress__` manifest."
        ),
    )
    constants: dict[str, int | float | list[Any]] = Field(
        default_factory=dict,
        description=(
            "Values fed as they are with every batch, dataset or random inputs, e.g. "
            "{sr: 16000} for a scalar sample-rate input; they override the dataset's arrays "
            "of the same name."
        ),
    )
    calibration_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=0.95,
        description=(
            "With a dataset: the fraction of its samples (shuffled with `seed`) set aside for "
            "calibration, and for training (prune, distill, finetune) unless "
            "`training_fraction` gives training its own share; the rest is the evaluation "
            "split on which accuracy and fidelity are measured, so no sample is used for both."
        ),
    )
    training_fraction: float | None = Field(
        default=None,
        ge=0.0,
        le=0.95,
        description=(
            "With a dataset: the fraction of its samples, after the calibration share, that "
            "prune, distill and finetune steps train on, so calibration, training and "
            "evaluation samples are three disjoint splits. Unset: training uses the "
            "calibration split. calibration_fraction + training_fraction is at most 0.95."
        ),
    )
    max_evaluation_samples: int = Field(
        default=2_000,
        ge=1,
        le=1_000_000,
        description="With a dataset: at most this many evaluation samples are scored.",
    )
    batch_sizes: list[PositiveDim] = Field(
        default_factory=lambda: [8],
        max_length=8,
        description=(
            "Further batch sizes at which latency is timed, after `batch_size` (which comes "
            "first and is the one shown as `latency`). Only for models whose batch dimension "
            "is dynamic; [] times `batch_size` only."
        ),
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "Intra-op threads of ONNX Runtime while timing and comparing; unset uses the "
            "machine's physical cores."
        ),
    )
    max_accuracy_drop: float | None = Field(
        default=None,
        ge=0.0,
        le=100.0,
        description=(
            "Budget: top-1 accuracy points the compressed model may lose on the evaluation "
            "split (needs a dataset with labels). Checked by accuracy-aware quantization and "
            "auto, and flagged in the report when missed."
        ),
    )
    min_fidelity: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description=(
            "Budget without labels: lowest cosine similarity of the first output to the "
            "original's, on the evaluation split (or random inputs without a dataset), e.g. "
            "0.999. Used when max_accuracy_drop is unset or the dataset has no labels."
        ),
    )

    llm: LlmEvaluateConfig = Field(
        default_factory=LlmEvaluateConfig,
        description="Language models: perplexity windows, decode timing, prompts and budget.",
    )

    quality_floor: QualityFloor | None = Field(
        default_factory=QualityFloor,
        description=(
            "The least a result must keep to be recommended (see `evaluate.quality_floor`); "
            "null judges nothing (every result is recommended)."
        ),
    )

    @model_validator(mode="after")
    def _dedupe(self) -> EvaluateConfig:
        self.batch_sizes = _unique(self.batch_sizes)  # type: ignore[arg-type]
        return self

    @model_validator(mode="after")
    def _leaves_evaluation_samples(self) -> EvaluateConfig:
        if self.training_fraction is not None and (
            round(self.calibration_fraction + self.training_fraction, 9) > 0.95
        ):
            raise ValueError(
                f"calibration_fraction ({self.calibration_fraction}) + training_fraction "
                f"({self.training_fraction}) is more than 0.95: leave at least 5% of the "
                "samples for evaluation."
            )
        return self

    @property
    def has_budget(self) -> bool:
        return self.max_accuracy_drop is not None or self.min_fidelity is not None


class Recipe(_Strict):
    """An ordered list of compression steps, export targets and an evaluation spec."""

    version: Literal[1] = Field(default=1, description="Recipe schema version.")
    steps: list[Step] = Field(min_length=1, description="Compression steps, applied in order.")
    export: list[ExportFormat] = Field(
        default_factory=lambda: ["onnx"],
        min_length=1,
        description=(
            "Artifact formats to produce: onnx (the compressed model, always produced) and "
            "tflite (LiteRT files in the precisions of the `tflite` section)."
        ),
    )
    tflite: TfliteConfig = Field(
        default_factory=TfliteConfig,
        description="TFLite files, when `export` lists tflite.",
    )
    evaluate: EvaluateConfig = Field(
        default_factory=EvaluateConfig, description="Measurement and comparison settings."
    )

    @field_validator("steps")
    @classmethod
    def _step_order(cls, steps: list[BaseModel]) -> list[BaseModel]:
        kinds = [step_kind(s) for s in steps]
        # Quantizing an already quantized graph finds nothing to do; refuse the confusion.
        if kinds.count("quantize") > 1:
            raise ValueError("only one quantize step is allowed")
        llm = [getattr(getattr(s, "quantize", None), "mode", None) in LLM_MODES for s in steps]
        if any(llm) and len(steps) > 1:
            raise ValueError(
                "a language-model recipe (weight-only or llm-auto) has one step, the quantize "
                "step; pruning and training steps are for ONNX models"
            )
        magnitude = [
            i
            for i, s in enumerate(steps)
            if isinstance(s, PruneStep) and s.prune.method == "magnitude"
        ]
        if magnitude and any(k in ("distill", "finetune") for k in kinds[magnitude[0] + 1 :]):
            raise ValueError(
                "distill or finetune after magnitude pruning would train the zeroed weights "
                "back to non-zero values; put the training step first, or prune by channel"
            )
        if "quantize" in kinds and any(
            k in TORCH_STEP_KINDS for k in kinds[kinds.index("quantize") :]
        ):
            raise ValueError(
                "the quantize step must come last: prune, distill and finetune rebuild a "
                "trainable model, which a quantized graph is not"
            )
        return steps

    @model_validator(mode="after")
    def _budget_for_accuracy_aware(self) -> Recipe:
        for step in self.steps:
            cfg = getattr(step, "quantize", None)
            if getattr(cfg, "accuracy_aware", False) and not self.evaluate.has_budget:
                raise ValueError(
                    "quantize.accuracy_aware needs a budget: set evaluate.max_accuracy_drop "
                    "(top-1 points, needs a dataset with labels) or evaluate.min_fidelity "
                    "(cosine similarity to the original's outputs, e.g. 0.999)"
                )
        return self

    @model_validator(mode="after")
    def _llm_exports(self) -> Recipe:
        if self.is_llm and self.export != ["onnx"]:
            raise ValueError(
                "export: a language model is delivered as an onnxruntime-genai folder (onnx); "
                "tflite is for ONNX models"
            )
        return self

    @field_validator("export")
    @classmethod
    def _dedupe_export(cls, export: list[str]) -> list[str]:
        # The compressed ONNX model is the run's result: it is always written.
        return list(dict.fromkeys(["onnx", *export]))

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

    @property
    def is_llm(self) -> bool:
        """Whether the recipe is for a language model (a weight-only or llm-auto step)."""
        return any(
            getattr(getattr(step, "quantize", None), "mode", None) in LLM_MODES
            for step in self.steps
        )

    def to_dict(self) -> dict[str, Any]:
        # The tflite section only matters when TFLite is exported, the llm section only for
        # language models; left out, recipes shown and stored stay short.
        exclude: dict[str, Any] = {}
        if "tflite" not in self.export:
            exclude["tflite"] = True
        if not self.is_llm:
            exclude["evaluate"] = {"llm": True}
        return self.model_dump(mode="json", exclude=exclude or None)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def default_recipe() -> Recipe:
    """The dynamic int8 recipe with default settings."""
    return Recipe(steps=[QuantizeStep(quantize=DynamicInt8Config())])


def format_validation_error(exc: ValidationError, title: str) -> str:
    """Turn a pydantic error into one line per problem, each naming its field path."""
    lines = [f"{title}:"]
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        # The quantize union puts the chosen mode into the path; users never wrote it.
        mode = next((p for p in loc if p in CONFIG_BY_MODE), None)
        loc = [p for p in loc if p not in CONFIG_BY_MODE]
        # So does the step union (steps.0.prune.prune.amount): drop the tag.
        loc = [p for i, p in enumerate(loc) if not (p in STEP_KINDS and loc[i + 1 : i + 2] == [p])]
        msg = err["msg"]
        # "Value error, unknown step" -> "unknown step": the prefix is pydantic noise.
        msg = msg.removeprefix("Value error, ")
        shown_input = err.get("input")
        if err["type"] == INVALID_MODE:
            loc.append("mode")
            shown_input = shown_input.get("mode") if isinstance(shown_input, Mapping) else None
        elif err["type"] == "extra_forbidden" and mode is not None:
            allowed = ", ".join(CONFIG_BY_MODE[mode].model_fields)
            msg = f"not a setting of mode {mode} (its settings: {allowed})"
        path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            shown = repr(shown_input)
            if len(shown) <= 60:
                msg = f"{msg} (got {shown})"
        lines.append(f"- {path}: {msg}")
    return "\n".join(lines)
