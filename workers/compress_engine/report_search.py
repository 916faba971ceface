"""The accuracy-aware search's part of the report: per-layer sensitivity, every trial and
the one kept.

Kept apart from report.py so each stays small; report.py re-exports every class here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from compress_engine.report_figures import SpeedVerdict


class LayerSensitivityInfo(BaseModel):
    """How far the model's output moves when only this layer is quantized."""

    node: str = Field(description="Node name in the original model.")
    op_type: str = Field(description="Its op type.")
    relative_error: float = Field(
        description=(
            "||y_q - y|| / ||y|| of the first output vs float32, all samples together, with "
            "only this layer (and the nodes kept in float with it) quantized."
        )
    )
    fallback_bytes: int = Field(
        default=0, description="How many bytes larger the file gets when it stays in float."
    )
    members: list[str] = Field(
        default_factory=list,
        description=(
            "The nodes kept in float with it: the layer and the single-input nodes after it "
            "that carry its output (bias, activation, pooling, reshape), so its output stays "
            "float too."
        ),
    )


class SearchTrial(BaseModel):
    """One trial of the accuracy-aware search."""

    index: int = Field(
        description=(
            "Trial number: 0 quantizes everything; each later one keeps the layers of the best "
            "trial before it, plus the next layer of the ranking, in float."
        )
    )
    kept_in_float: list[str] = Field(description="Layers kept in float in this trial.")
    metric: float = Field(description="The budget metric measured on this trial's model.")
    meets_budget: bool = Field(description="Whether the metric is within the budget.")
    size_bytes: int = Field(description="This trial's model file size.")
    added: str | None = Field(
        default=None, description="The layer this trial added to the best trial before it."
    )
    improved: bool = Field(
        default=True,
        description="Whether it moved the metric; later trials build only on trials that did.",
    )
    rejected: list[str] = Field(
        default_factory=list,
        description=(
            "Why it may not be the answer: a file not smaller than the original, or below the "
            "quality floor. Empty: it may."
        ),
    )
    p50_ms: float | None = Field(
        default=None, description="Median latency, timed interleaved with the original."
    )
    speedup: float | None = Field(
        default=None, description="Original p50 / this trial's p50 in the same rounds."
    )
    speed: SpeedVerdict | None = Field(
        default=None,
        description="faster/slower/unchanged than the original beyond the noise band.",
    )


class SearchSummary(BaseModel):
    """Accuracy-aware quantization: the budget, every trial, and the one kept."""

    metric: Literal["accuracy_drop", "cosine"] = Field(
        description=(
            "accuracy_drop: top-1 points lost on the evaluation split (lower is better); "
            "cosine: cosine similarity of the first output to the original's (higher is better)."
        )
    )
    budget: float = Field(description="The limit the metric had to meet.")
    met: bool = Field(description="Whether the kept trial meets the budget.")
    trials: list[SearchTrial] = Field(description="Every trial, in order.")
    chosen: int = Field(description="Index of the trial whose model is the artifact.")
    samples: int = Field(description="Samples each trial was scored on.")
    stop_reason: str = Field(default="", description="Why the search ended, in words.")
    skipped: list[str] = Field(
        default_factory=list,
        description="Layers not tried: keeping them in float would not leave the file smaller.",
    )
    original_size_bytes: int | None = Field(
        default=None, description="The step's input model size, the limit every trial is under."
    )
