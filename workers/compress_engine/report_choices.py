"""The quantize step's choices in the report: which int8 format, smoothing, bias correction
and latency-gate exclusions a build used, and the measured trial behind each.

Kept apart from report.py so each stays small; report.py re-exports every class here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ChoiceTrial(BaseModel):
    """One build measured to make a choice (with and without an option, say)."""

    label: str = Field(description='What was built, e.g. "without smoothing", "U8S8".')
    fidelity: float | None = Field(
        default=None,
        description="Mean cosine similarity to float32 on held-out calibration samples.",
    )
    p50_ms: float | None = Field(
        default=None, description="Median latency, timed interleaved with the other trials."
    )
    size_bytes: int | None = Field(default=None, description="File size in bytes.")


class QuantChoice(BaseModel):
    """One option of the quantize step the engine decided, and why."""

    option: str = Field(
        description=(
            'Which option: "int8_format", "smooth_quant", "bias_correction" or '
            '"split_mixed_ranges".'
        )
    )
    chosen: str = Field(description='What was used, e.g. "U8S8", "on", "off".')
    reason: str = Field(description="Why, in numbers where it was measured.")
    trials: list[ChoiceTrial] = Field(
        default_factory=list, description="The builds measured to decide ([] = no trial ran)."
    )


class GatedGroup(BaseModel):
    """An op type (or region) the latency gate tried keeping in float."""

    group: str = Field(description='Op type or region, e.g. "Conv (depthwise)", "MatMul".')
    nodes: list[str] = Field(description="The quantized nodes in the group.")
    ratio: float = Field(
        description=(
            "p50 with the group quantized / p50 with it kept in float (> 1: quantizing it was "
            "slower)."
        )
    )
    noise: float = Field(description="The timing's noise band (e.g. 0.04 = ±4%).")
    excluded: bool = Field(description="Whether the group was kept in float in the result.")
    reason: str = Field(description="The measured reason, in words.")
