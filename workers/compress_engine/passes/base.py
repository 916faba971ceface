"""What every compression pass looks like (one class per technique, Olive-style)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from compress_engine.errors import EngineError

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime

    from compress_engine.configs import QualityFloor
    from compress_engine.data import Dataset
    from compress_engine.report import (
        AutoSummary,
        LayerSensitivityInfo,
        SearchSummary,
        TrainingPoint,
    )
    from compress_engine.tuning import Budget, Scorer

# stage(label, lo, hi) starts a sub-stage spanning lo..hi of the step's progress slice and
# returns the fraction callback (0..1) within it.
SubStage = Callable[[str, float, float], Callable[[float], None]]


class PassInfo(BaseModel):
    """Capability metadata, listable without importing torch or onnxruntime."""

    name: str = Field(description="Registry name, e.g. 'quantize-dynamic-int8'.")
    title: str = Field(description="Human name, e.g. 'Dynamic int8 quantization'.")
    stage: str = Field(description="Progress label while it runs.")
    description: str = Field(description="What it does and when to use it.")
    step: str = Field(description="Recipe step kind it implements, e.g. 'quantize'.")
    mode: str | None = Field(default=None, description="Step mode it implements, if any.")
    needs_data: bool = Field(description="Needs a calibration or training dataset.")
    needs_labels: bool = Field(description="Needs labels in that dataset.")
    compute: Literal["light", "heavy"] = Field(description="'heavy' wants a GPU worker.")
    input_format: Literal["onnx"] = Field(default="onnx", description="Model format consumed.")
    output_format: Literal["onnx"] = Field(default="onnx", description="Model format produced.")


@dataclass
class Evaluator:
    """What scoring and timing candidates against the original need: the passes that choose
    between models by measuring them (auto, accuracy-aware and sensitivity tuning) get it from
    the run, which has already loaded and measured the original."""

    scorer: Scorer  # the report's evaluation batches (or seeded random inputs)
    budget: Budget | None  # evaluate's budget, None when it sets none
    original: onnxruntime.InferenceSession  # the original model, for interleaved timing
    # A second session of the original's file, timed beside candidates: the noise band.
    original_copy: onnxruntime.InferenceSession
    latency_feed: Mapping[str, np.ndarray]  # the first batch size's timing feed
    latency_batch: int  # samples in that feed
    macs_by_op_type: dict[str, int]  # the original's MACs (auto picks modes by them)
    providers: list[str]
    threads: int
    warmup: int
    latency_runs: int
    stage: SubStage  # sub-stages within the step's progress slice
    # evaluate.quality_floor: a candidate below it is never handed back as the answer.
    floor: QualityFloor | None = None

    def below_floor(self, path: Path) -> list[str]:
        """Why the model at `path` is below the quality floor on the scorer's batches, judged
        against the original ([] = it is not, or no floor is set)."""
        from compress_engine.quality import check_candidate

        return check_candidate(
            self.original,
            path,
            (feed for feed, _ in self.scorer.batches),
            providers=self.providers,
            threads=self.threads,
            floor=self.floor,
        )


@dataclass
class PassContext:
    """What a pass may use besides its config."""

    work_dir: Path  # scratch space, deleted after the run
    seed: int = 0
    # The calibration split, checked against the model's inputs; None without a dataset.
    data: Dataset | None = None
    # The training split for prune/distill/finetune; None: they train on `data`.
    training_data: Dataset | None = None
    # Samples per run when feeding `data` (the model's fixed batch dim, if it has one).
    batch_size: int = 1
    progress: Callable[[float], None] = field(default=lambda _fraction: None)
    # Static int8: a JSON file of calibrated activation ranges, written on first use and read
    # instead of calibrating again (same graph and settings, e.g. the trials of a search).
    calibration_cache: Path | None = None
    # The model is already pre-processed for quantization (opset, shape inference,
    # optimisation, node names): a search's shared graph, quantized as it is.
    prepared: bool = False
    # Torch-side passes: where this step sits in the recipe, the model before any step (the
    # default teacher), other teachers by name, and a sink for per-epoch training points.
    step_index: int = 0
    original_model: Path | None = None
    teachers: Mapping[str, Path] = field(default_factory=dict)
    on_training: Callable[[TrainingPoint], None] | None = None
    # The shapes the run measures the original at (evaluate.input_shapes, else the dataset's
    # samples), and evaluate.constants: torch-side passes draw their example inputs at them.
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    constants: Mapping[str, Any] = field(default_factory=dict)
    # Scoring and timing against the original; compress() always gives one, a pass run on its
    # own (a trial of a search) has none and must not need it.
    evaluator: Evaluator | None = None

    def require_evaluator(self, what: str) -> Evaluator:
        if self.evaluator is None:
            raise EngineError(
                f"{what} measures candidates against the original: run it through compress()."
            )
        return self.evaluator


@dataclass
class PassResult:
    """A pass's output model and what it has to say about it."""

    model_path: Path
    suffix: str  # artifact name part: model.<suffix>.onnx
    precision: str  # e.g. "int8-dynamic"
    details: BaseModel | None = None  # typed, per technique; lands in the report
    notes: list[str] = field(default_factory=list)
    # Extra files offered beside the model (format, path), e.g. ("onnx-zip", model.zip).
    extras: list[tuple[str, Path]] = field(default_factory=list)
    # What choosing by measurement found, for the report's own sections.
    sensitivity: list[LayerSensitivityInfo] | None = None
    search: SearchSummary | None = None
    auto: AutoSummary | None = None


ConfigT = TypeVar("ConfigT", bound=BaseModel)


class Pass(ABC, Generic[ConfigT]):
    """One technique. Subclasses set `info` and `config_type` and implement `run`.

    Heavy frameworks (onnxruntime, torch) are imported inside `run`, never at module level.
    """

    info: ClassVar[PassInfo]
    config_type: ClassVar[type[BaseModel]]

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @classmethod
    def accepts(cls, config: BaseModel) -> bool:
        """Whether this pass implements the given step config."""
        if not isinstance(config, cls.config_type):
            return False
        return cls.info.mode is None or getattr(config, "mode", None) == cls.info.mode

    def needs_data(self) -> bool:
        """Whether this step, as configured, needs a dataset (some settings of a pass do)."""
        return self.info.needs_data or bool(getattr(self.config, "needs_data", False))

    def needs_labels(self) -> bool:
        """Whether this step, as configured, needs labels in that dataset."""
        return self.info.needs_labels

    def preflight(self, model_path: Path, ctx: PassContext) -> None:
        """Refuse what this step cannot do before any step spends time (EngineError with
        the reason and what to do). The run asks every step, in order, before the first
        runs, each with the original model (`ctx.step_index` says which step it is: only the
        first will get that model as its input). Most passes have nothing to check."""

    @abstractmethod
    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        """Read `model_path`, write the transformed model to `out_path`."""
