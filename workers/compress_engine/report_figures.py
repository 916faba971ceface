"""Measured figures in the report: latency, model measurements, fidelity and accuracy.

Kept apart from report.py so each stays small; report.py re-exports every class here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Latency(BaseModel):
    """Wall-clock inference time of one model on one device."""

    p50_ms: float = Field(description="Median latency per run, milliseconds.")
    p90_ms: float = Field(description="90th percentile latency, milliseconds.")
    p99_ms: float = Field(description="99th percentile latency, milliseconds.")
    mean_ms: float = Field(description="Mean latency, milliseconds.")
    runs: int = Field(description="Timed runs.")
    warmup: int = Field(description="Untimed runs before timing.")
    batch_size: int = Field(description="Samples per run (the batch size timed).")
    throughput_per_s: float = Field(description="Samples per second at the median latency.")
    provider: str = Field(description="ONNX Runtime execution provider.")
    threads: int = Field(description="Intra-op threads.")
    interleaved: bool = Field(
        default=False,
        description=(
            "Timed in alternation with the other model(s) on the same inputs, so machine drift "
            "affects both alike."
        ),
    )


class RuntimeLatency(BaseModel):
    """Latency on one runtime a deployment might use, or why this worker could not time it."""

    runtime: str = Field(description='"CPU", "CUDA", "TensorRT fp16" or "TensorRT int8".')
    provider: str = Field(description="ONNX Runtime execution provider behind it.")
    status: Literal["ok", "unavailable", "failed", "not applicable"] = Field(
        description="ok: timed here; otherwise `reason` says why not."
    )
    reason: str = Field(default="", description="Why there is no figure.")
    original: Latency | None = Field(default=None, description="The original model's latency.")
    compressed: Latency | None = Field(default=None, description="The compressed model's latency.")


class ModelMeasurement(BaseModel):
    """Static and timed figures of one model file."""

    size_bytes: int = Field(description="File size in bytes.")
    parameters: int = Field(description="Elements in initializers and Constant nodes.")
    nodes: int = Field(default=0, description="Graph nodes, subgraphs included.")
    op_types: dict[str, int] = Field(default_factory=dict, description="Node count per op type.")
    sha256: str = Field(default="", description="SHA-256 of the file.")
    latency: Latency = Field(description="Inference latency at the first measured batch size.")
    latency_by_batch: dict[str, Latency] = Field(
        default_factory=dict,
        description='Inference latency per batch size, keyed by the batch size as text ("1").',
    )
    macs: int | None = Field(
        default=None,
        description=(
            "Multiply-accumulates of one inference at the measured input shapes with batch 1 "
            "(a fixed batch dim keeps its size); convolutions and matrix products only, see "
            "macs_uncounted_op_types. None if shapes could not be inferred."
        ),
    )
    macs_by_op_type: dict[str, int] = Field(
        default_factory=dict, description="MACs per op type (same shapes as `macs`)."
    )
    macs_uncounted_op_types: dict[str, int] = Field(
        default_factory=dict,
        description="Node count per op type whose arithmetic `macs` does not include.",
    )
    nonzero_parameters: int | None = Field(
        default=None,
        description=(
            "Non-zero elements of all initializers (stored values: a quantized zero counts as "
            "zero); None if the weights could not be read."
        ),
    )


class OutputFidelity(BaseModel):
    """How closely one output of the compressed model follows the original.

    A metric is None when it cannot be computed (e.g. the output contains NaN or Inf).
    """

    name: str = Field(description="Output name.")
    max_abs_diff: float | None = Field(description="Largest absolute element difference.")
    mean_abs_diff: float | None = Field(description="Mean absolute element difference.")
    cosine_similarity: float | None = Field(
        description="Cosine similarity of the flattened outputs (1.0 = same direction)."
    )
    top1_agreement: float | None = Field(
        default=None,
        description="Fraction of samples with the same argmax; only for [N, C] outputs, C > 1.",
    )


class Fidelity(BaseModel):
    """Compressed vs original outputs on the same inputs."""

    samples: int = Field(description="Samples compared.")
    inputs: Literal["random", "evaluation split", "dataset"] = Field(
        default="random",
        description=(
            'Where the compared inputs came from: "random" (seeded, no dataset) or "evaluation '
            'split" (the dataset samples not used for calibration).'
        ),
    )
    summary: OutputFidelity = Field(description="The first output's figures.")
    per_output: list[OutputFidelity] = Field(description="Figures for every output.")


class Accuracy(BaseModel):
    """Top-k accuracy of both models against the dataset's labels, on the evaluation split."""

    output: str = Field(description="Output scored (the first; [samples, classes]).")
    samples: int = Field(description="Labelled evaluation samples scored.")
    classes: int = Field(description="Classes in the scored output.")
    original_top1: float = Field(description="Original model's top-1 accuracy, 0..1.")
    result_top1: float = Field(description="Compressed model's top-1 accuracy, 0..1.")
    original_top5: float | None = Field(
        default=None, description="Original top-5 accuracy, 0..1; only with more than 5 classes."
    )
    result_top5: float | None = Field(
        default=None, description="Compressed top-5 accuracy, 0..1; only with more than 5 classes."
    )
    drop_points: float = Field(
        description="Top-1 accuracy lost, in percentage points (negative = gained)."
    )
