"""The before/after report: what was done, what it produced, and how the two models compare.

Stored as JSON on the job (model_dump(mode="json")) and read back through `Report`, so every
field must survive a JSON round trip. Unknown keys are ignored on read, so reports written by
a newer engine still load.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from compress_engine._version import ENGINE_VERSION
from compress_engine.report_choices import ChoiceTrial, GatedGroup, QuantChoice
from compress_engine.report_figures import (
    Accuracy,
    Fidelity,
    Latency,
    ModelMeasurement,
    NoiseBand,
    OutputFidelity,
    RuntimeLatency,
    SampleSpread,
    SpeedVerdict,
    speed_text,
    speed_verdict,
)
from compress_engine.report_llm import LlmDetails
from compress_engine.report_search import LayerSensitivityInfo, SearchSummary, SearchTrial
from compress_engine.tensors import TensorInfo

__all__ = [
    "Accuracy",
    "ChoiceTrial",
    "Fidelity",
    "GatedGroup",
    "Latency",
    "LayerSensitivityInfo",
    "ModelMeasurement",
    "NoiseBand",
    "OutputFidelity",
    "QuantChoice",
    "RuntimeLatency",
    "SampleSpread",
    "SearchSummary",
    "SearchTrial",
]


class DataSummary(BaseModel):
    """The dataset a run used and how it was split."""

    samples: int = Field(description="Samples in the dataset.")
    calibration_samples: int = Field(description="Samples in the calibration split.")
    training_samples: int | None = Field(
        default=None,
        description=(
            "Samples in the training split when it is separate (evaluate.training_fraction); "
            "None: training steps used the calibration split."
        ),
    )
    evaluation_samples: int = Field(description="Samples in the evaluation split that were used.")
    labels: bool = Field(description="Whether the dataset has class labels.")
    seed: int = Field(description="Seed of the shuffle before splitting.")
    classes: list[str] = Field(
        default_factory=list, description="Class names by label id (image folders)."
    )
    preprocessing: str = Field(
        default="", description="How the samples were made from the files (image folders)."
    )


class ArtifactCheck(BaseModel):
    """An artifact run in its own runtime and compared with the original before it is offered."""

    runtime: str = Field(description='Runtime that ran it, e.g. "ONNX Runtime 1.31.1".')
    provider: str = Field(description="Execution provider or interpreter on this worker.")
    inputs: str = Field(description='"evaluation split" or "random" inputs.')
    samples: int = Field(description="Samples compared.")
    cosine_similarity: float | None = Field(
        default=None, description="Cosine similarity of the first output to the original's."
    )
    max_abs_diff: float | None = Field(
        default=None, description="Largest absolute difference from the original's output."
    )
    top1_agreement: float | None = Field(
        default=None, description="Share of samples with the original's top-1 class."
    )
    accuracy_top1: float | None = Field(
        default=None, description="Top-1 accuracy on the labelled evaluation split."
    )
    conversion_max_abs_diff: float | None = Field(
        default=None,
        description=(
            "Converted files: largest absolute difference from the ONNX model they were "
            "converted from (run in ONNX Runtime), i.e. the converter's own error."
        ),
    )
    latency: Latency | None = Field(default=None, description="Latency in this runtime.")

    @classmethod
    def measured(
        cls, fidelity: Fidelity, accuracy: Accuracy | None, *, runtime: str, provider: str, **more
    ) -> ArtifactCheck:
        """A check from the fidelity (and accuracy) the artifact scored against the original."""
        s = fidelity.summary
        return cls(
            runtime=runtime,
            provider=provider,
            inputs=fidelity.inputs,
            samples=fidelity.samples,
            cosine_similarity=s.cosine_similarity,
            max_abs_diff=s.max_abs_diff,
            top1_agreement=s.top1_agreement,
            accuracy_top1=None if accuracy is None else accuracy.result_top1,
            **more,
        )


class ArtifactInfo(BaseModel):
    """A file the run produced, or tried to produce (status failed, with the reason)."""

    name: str = Field(description="File name in the output directory.")
    format: Literal["onnx", "onnx-external", "onnx-zip", "tflite", "genai-zip"] = Field(
        description=(
            "File format: onnx; onnx-external (a zip of the ONNX file and the external data "
            "file beside it, the form of models over 2 GB); onnx-zip (the ONNX file "
            "deflate-compressed, to show the storage saving of zeros); tflite (LiteRT "
            "flatbuffer); genai-zip (a language model's onnxruntime-genai folder: model, "
            "data, genai_config.json, tokenizer and an example chat.py)."
        )
    )
    precision: str = Field(description='Numeric precision, e.g. "int8-dynamic".')
    size_bytes: int = Field(default=0, description="File size in bytes (0 if not produced).")
    sha256: str = Field(default="", description="SHA-256 of the file (empty if not produced).")
    status: Literal["ok", "failed"] = Field(
        default="ok",
        description="ok: produced and checked in its runtime; failed: not offered (see failure).",
    )
    failure: str | None = Field(default=None, description="Why the artifact is not offered.")
    source: str | None = Field(
        default=None, description="What the file was made from, where not the compressed model."
    )
    layouts: dict[str, str] = Field(
        default_factory=dict,
        description='Input layout per input name where it differs from ONNX, e.g. "NHWC".',
    )
    input_dtypes: dict[str, str] = Field(
        default_factory=dict, description="Input element types where not the ONNX ones."
    )
    check: ArtifactCheck | None = Field(default=None, description="The run in its runtime.")
    opset: int | None = Field(default=None, description="ONNX files: opset of the ai.onnx domain.")
    conversion_s: float | None = Field(default=None, description="Converter wall time.")
    converter: str | None = Field(
        default=None,
        description=(
            "TFLite files: the route that made it: onnx2tf (from the ONNX graph) or "
            "litert-torch (from the torch module onnx2torch rebuilds, where onnx2tf failed)."
        ),
    )
    input_shapes: dict[str, list[int | None]] = Field(
        default_factory=dict,
        description="TFLite files: the input shapes the file takes (ONNX layout, batch 1).",
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def unpacked_name(self) -> str:
        """The model file's name once unpacked: an external-data zip becomes its `.onnx`
        (with `<name>.data` beside it)."""
        return self.name.removesuffix(".zip") if self.format == "onnx-external" else self.name


class StepTiming(BaseModel):
    """Wall time of one stage of the run."""

    name: str = Field(description="Stage name.")
    wall_s: float = Field(description="Wall-clock seconds.")


class QuantizationDetails(BaseModel):
    """What the quantize step actually did."""

    mode: str = Field(description="Quantization mode from the recipe.")
    weight_type: str = Field(
        description='Stored weight type: "int8", "uint8", "int4", "uint4" or "float16".'
    )
    activation_type: str | None = Field(
        default=None,
        description='Activation type where activations are quantized too ("uint8", "int8").',
    )
    per_channel: bool = Field(default=False, description="Per-channel weight scales.")
    reduce_range: bool = Field(default=False, description="7-bit weights.")
    op_types_requested: list[str] = Field(
        default_factory=list, description="Op types the recipe asked for."
    )
    quantized_nodes: int = Field(
        description="Nodes turned into integer (or float16) kernels or wrapped in Q/DQ pairs."
    )
    op_types: dict[str, int] = Field(
        description="Quantized node count per original op type (e.g. Gemm, MatMul)."
    )
    excluded: list[str] = Field(default_factory=list, description="Nodes kept in float.")
    excluded_op_types: list[str] = Field(
        default_factory=list, description="Op types kept in float everywhere."
    )
    preprocessed: bool = Field(
        description="Whether ONNX Runtime's pre-processing (shape inference, optimisation) ran."
    )
    calibration: str | None = Field(
        default=None, description="Calibration method (static int8): minmax/entropy/percentile."
    )
    calibration_samples: int | None = Field(
        default=None, description="Samples the activation ranges were calibrated on."
    )
    block_size: int | None = Field(default=None, description="Weights per scale (int4).")
    symmetric: bool | None = Field(default=None, description="Symmetric weights (no zero point).")
    opset_upgraded_from: int | None = Field(
        default=None, description="The model's opset before it was upgraded for this mode."
    )
    choices: list[QuantChoice] = Field(
        default_factory=list,
        description="Options the engine chose for this build (format, smoothing...) and why.",
    )
    gated: list[GatedGroup] = Field(
        default_factory=list,
        description="Op types the latency gate timed, and which it kept in float as too slow.",
    )


class AutoCandidate(BaseModel):
    """One variant `auto` built and measured."""

    mode: str = Field(description="Quantization mode.")
    size_bytes: int = Field(description="File size in bytes.")
    p50_ms: float = Field(description="Median latency at the first batch size, interleaved.")
    meets_budget: bool = Field(description="Within the budget (True when none was given).")
    metric: float | None = Field(
        default=None, description="Budget metric (see search.metric); None without a budget."
    )
    quality_reasons: list[str] = Field(
        default_factory=list,
        description="Why it is below evaluate.quality_floor ([] = it is not), so never picked.",
    )


class AutoSummary(BaseModel):
    """What `auto` tried and why it handed back what it did."""

    objective: Literal["latency", "size"] = Field(description="What `better` meant.")
    original_size_bytes: int = Field(description="The original's file size.")
    original_p50_ms: float = Field(description="The original's median latency, same timing.")
    budget_metric: Literal["accuracy_drop", "cosine"] | None = Field(
        default=None, description="The budget metric, if a budget was given."
    )
    budget: float | None = Field(default=None, description="The budget limit, if given.")
    candidates: list[AutoCandidate] = Field(description="Every variant built, in order tried.")
    pick: str | None = Field(description="The chosen mode; None = the original is kept.")
    reason: str = Field(description="Why, in numbers.")
    noise: NoiseBand | None = Field(
        default=None,
        description="The identical-copy noise band of auto's own timing; a gain must clear it.",
    )


class TorchRoundTrip(BaseModel):
    """The check that the torch module rebuilt from the ONNX graph computes the same thing."""

    max_abs_diff: float = Field(description="Largest |torch - ONNX Runtime| over the outputs.")
    tolerance: float = Field(description="Largest difference accepted before any pass runs.")
    samples: int = Field(description="Random input samples compared.")
    opset: int = Field(description="ONNX opset the result was exported at (the original's).")


class PrunedLayer(BaseModel):
    """Channels (or weights) of one layer before and after pruning."""

    name: str = Field(description="Layer name (ONNX node name of the original).")
    kind: str = Field(description='"conv" or "linear" (and so on).')
    before: int = Field(description="Output channels (channel) or weights (magnitude) before.")
    after: int = Field(description="Output channels kept (channel) or non-zero weights left.")


class PruneSearchPoint(BaseModel):
    """One amount tried while searching for a MACs or parameter target."""

    amount: float = Field(description="Fraction of channels removed in this try.")
    macs_ratio: float = Field(description="MACs after / before, counted on the torch module.")
    params_ratio: float = Field(description="Parameters after / before.")


class PruningDetails(BaseModel):
    """What the prune step removed."""

    method: Literal["channel", "magnitude"] = Field(description="Structured or unstructured.")
    importance: str = Field(description="How channels or weights were ranked.")
    scope: str = Field(description="uniform (every layer alike) or global.")
    amount: float = Field(description="Fraction removed per prunable layer (or of the weights).")
    round_to: int | None = Field(default=None, description="Channel counts rounded to this.")
    iterations: int = Field(default=1, description="Pruning steps taken to reach the amount.")
    target: str | None = Field(default=None, description='The target searched, e.g. "macs<=0.5".')
    search: list[PruneSearchPoint] = Field(
        default_factory=list, description="Amounts tried while searching for the target."
    )
    parameters_before: int = Field(description="Parameters of the torch module before.")
    parameters_after: int = Field(description="Parameters after (non-zero ones for magnitude).")
    macs_before: int = Field(description="MACs of one sample before (torch-pruning's counter).")
    macs_after: int = Field(description="MACs of one sample after.")
    layers: list[PrunedLayer] = Field(description="Per layer: channels or weights kept.")
    ignored: list[str] = Field(description="Layers left whole (the output layers included).")
    round_trip: TorchRoundTrip = Field(description="ONNX -> torch check before pruning.")


class TrainingPoint(BaseModel):
    """One epoch of a distill or finetune step: the live curve and its record."""

    step: int = Field(description="Index of the recipe step this belongs to.")
    kind: Literal["distill", "finetune", "recover"] = Field(description="Which training.")
    epoch: int = Field(description="Epoch number, from 1 (0: before any training).")
    optimizer_steps: int = Field(description="Optimiser steps taken so far.")
    train_loss: float | None = Field(description="Mean training loss of the epoch.")
    val_metric: float = Field(description="Validation metric after the epoch (see metric).")
    metric: Literal["accuracy", "cosine", "loss"] = Field(
        description="accuracy: top-1 %, cosine: to the teacher's outputs, loss: the KD loss."
    )
    lr: float = Field(description="Learning rate at the end of the epoch.")
    elapsed_s: float = Field(description="Seconds since the step started.")
    eta_s: float | None = Field(default=None, description="Estimated seconds left.")


class TrainingDetails(BaseModel):
    """A distill or finetune step: setup, every epoch, and which epoch was kept."""

    kind: Literal["distill", "finetune"] = Field(description="Which training.")
    teacher: str | None = Field(default=None, description="The teacher (distill).")
    loss: str = Field(description="The loss minimised, in words.")
    device: str = Field(description="Where it trained, e.g. 'cpu' or 'cuda (NVIDIA H100)'.")
    mixed_precision: str | None = Field(
        default=None, description="Autocast dtype on GPU (bfloat16/float16); None = float32."
    )
    world_size: int = Field(
        default=1,
        ge=1,
        description="Processes that trained data-parallel, one per GPU; 1 = a single process.",
    )
    backend: str | None = Field(
        default=None,
        description="torch.distributed backend of a data-parallel run (nccl, gloo); else None.",
    )
    train_samples: int = Field(description="Samples trained on.")
    validation_samples: int = Field(description="Held-out training samples used to choose.")
    metric: Literal["accuracy", "cosine", "loss"] = Field(description="Validation metric.")
    before: float = Field(description="Validation metric before training.")
    best: float = Field(description="Validation metric of the kept epoch.")
    best_epoch: int = Field(description="Epoch whose weights were kept (0 = none improved).")
    epochs_run: int = Field(description="Epochs run (fewer than asked if stopped early).")
    stopped_early: bool = Field(description="Whether early stopping ended it.")
    optimizer_steps: int = Field(description="Optimiser steps taken.")
    seconds_per_step: float = Field(description="Mean wall seconds per optimiser step.")
    history: list[TrainingPoint] = Field(description="Every epoch, in order.")
    round_trip: TorchRoundTrip | None = Field(
        default=None, description="ONNX -> torch check before training."
    )


class Report(BaseModel):
    """Everything a compression run measured and produced."""

    schema_version: Literal[1] = Field(default=1, description="Report schema version.")
    engine_version: str = Field(default=ENGINE_VERSION, description="compress_engine version.")
    created_at: datetime = Field(
        default_factory=lambda: datetime.now(UTC), description="When the run finished (UTC)."
    )
    recipe: dict[str, Any] = Field(description="The recipe that was run, as a mapping.")
    original: ModelMeasurement = Field(description="The uploaded model.")
    result: ModelMeasurement = Field(description="The compressed model.")
    fidelity: Fidelity = Field(description="Compressed vs original outputs.")
    recommended: bool = Field(
        default=True,
        description=(
            "False when the result is below the quality floor (evaluate.quality_floor): it is "
            "still offered for download, but not as a good result; see quality_reasons."
        ),
    )
    quality_reasons: list[str] = Field(
        default_factory=list, description="Why the result is not recommended ([] = it is)."
    )
    quality_floor: str = Field(
        default="", description="The quality floor the result was judged against, in words."
    )
    artifacts: list[ArtifactInfo] = Field(
        description="Produced files, and failed exports with the reason (status failed)."
    )
    steps: list[StepTiming] = Field(description="Wall time per stage.")
    quantization: QuantizationDetails | None = Field(
        default=None, description="Details of the quantize step, if there was one."
    )
    accuracy: Accuracy | None = Field(
        default=None, description="Top-k accuracy on the evaluation split, with labels only."
    )
    data: DataSummary | None = Field(
        default=None, description="The dataset used and its split, if one was given."
    )
    input_shapes: dict[str, list[int]] = Field(description="Concrete input shapes measured with.")
    input_shape_sources: dict[str, Literal["model", "dataset", "input_shapes", "default"]] = Field(
        default_factory=dict,
        description=(
            "Per input, what fixed the shape latency was timed at: model (no free dims "
            "besides the batch), dataset (its samples' shape), input_shapes "
            "(evaluate.input_shapes, the CLI's --input-shape) or default (a free dim set "
            "to a guess; a note names it)."
        ),
    )
    inputs: list[TensorInfo] = Field(
        default_factory=list, description="The model's inputs: names, dtypes, declared shapes."
    )
    outputs: list[TensorInfo] = Field(
        default_factory=list, description="The model's outputs: names, dtypes, declared shapes."
    )
    device: str = Field(description="Hardware the measurements ran on.")
    runtimes: list[RuntimeLatency] = Field(
        default_factory=list,
        description=(
            "Latency at the first batch size per runtime (CPU, CUDA, TensorRT fp16 and int8), "
            "each timed where this worker has it, else listed with the reason."
        ),
    )
    versions: dict[str, str] = Field(description="Library versions.")
    notes: list[str] = Field(default_factory=list, description="Things the user should know.")
    latency_ratio_by_batch: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "Original p50 / result p50 per batch size (keyed as text); above 1 = the result is "
            "faster. Note the inverse direction of `latency_ratio`."
        ),
    )
    latency_noise_by_batch: dict[str, NoiseBand] = Field(
        default_factory=dict,
        description=(
            "Per batch size (keyed as text), the noise band of the latency ratio, measured by "
            "timing the original against an identical copy in the same interleaved rounds; a "
            "speed change counts only beyond it."
        ),
    )
    sensitivity: list[LayerSensitivityInfo] | None = Field(
        default=None, description="Per-layer sensitivity, most sensitive first, where computed."
    )
    search: SearchSummary | None = Field(
        default=None, description="Accuracy-aware quantization trials, where it ran."
    )
    auto: AutoSummary | None = Field(
        default=None, description="What quantize mode auto tried and picked, where it ran."
    )
    pruning: PruningDetails | None = Field(
        default=None, description="What the prune step removed, if there was one."
    )
    training: list[TrainingDetails] = Field(
        default_factory=list, description="Each distill or finetune step, in order."
    )
    llm: LlmDetails | None = Field(
        default=None,
        description=(
            "Language models: perplexity, decode speed, memory and answers, original vs "
            "compressed (the generic figures above are filled from it)."
        ),
    )

    def speedup(self, batch: str | None = None) -> float | None:
        """Original p50 / result p50 at `batch` (text; None = the first batch size)."""
        if batch is None or batch == str(self.original.latency.batch_size):
            return _ratio(self.original.latency.p50_ms, self.result.latency.p50_ms)
        before = self.original.latency_by_batch.get(batch)
        after = self.result.latency_by_batch.get(batch)
        return None if before is None or after is None else _ratio(before.p50_ms, after.p50_ms)

    def speed_verdict(self, batch: str | None = None) -> SpeedVerdict | None:
        """faster/slower/unchanged beyond the noise band; None where no band was measured."""
        key = str(self.original.latency.batch_size) if batch is None else batch
        return speed_verdict(self.speedup(batch), self.latency_noise_by_batch.get(key))

    def speed_text(self, batch: str | None = None) -> str:
        """e.g. "1.42× faster (noise ±4%)" or "no measurable speed change (1.03×, noise ±5%)"."""
        key = str(self.original.latency.batch_size) if batch is None else batch
        return speed_text(self.speedup(batch), self.latency_noise_by_batch.get(key))

    def timed_shapes_text(self) -> str:
        """The shapes latency was timed at and what fixed them, e.g. "x [1, 3, 48, 320] (the
        dataset's shape)"."""
        return ", ".join(
            f"{name} [{', '.join(map(str, shape))}]"
            + (f" ({_SHAPE_SOURCES[src]})" if (src := self.input_shape_sources.get(name)) else "")
            for name, shape in self.input_shapes.items()
        )

    @property
    def files(self) -> list[ArtifactInfo]:
        """The artifacts offered for download: produced and checked."""
        return [a for a in self.artifacts if a.ok]

    # Ratios are serialised too (handy for sorting in SQL) and ignored when read back.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def size_ratio(self) -> float | None:
        """Result size / original size (0.25 = four times smaller)."""
        return _ratio(self.result.size_bytes, self.original.size_bytes)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def latency_ratio(self) -> float | None:
        """Result p50 / original p50 (below 1 = faster)."""
        return _ratio(self.result.latency.p50_ms, self.original.latency.p50_ms)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def param_ratio(self) -> float | None:
        """Result parameters / original parameters."""
        return _ratio(self.result.parameters, self.original.parameters)


_SHAPE_SOURCES = {
    "model": "fixed by the model",
    "dataset": "the dataset's shape",
    "input_shapes": "set by evaluate.input_shapes",
    "default": "free dims guessed: see the notes",
}


def _ratio(new: float, old: float) -> float | None:
    return new / old if old else None
