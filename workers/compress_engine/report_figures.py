"""Measured figures in the report: latency, model measurements, fidelity and accuracy.

Kept apart from report.py so each stays small; report.py re-exports every class here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

# A speed ratio within this of 1 is never claimed as a change, however close the identical
# copy timed: timer resolution and rounding alone move a ratio by about a percent.
MIN_NOISE = 0.02
# A multi-thread CPU figure whose band is wider than this (±10%) is unstable: latency is then
# also timed at 1 thread, where no thread pool competes with other work, and both are shown.
UNSTABLE_NOISE = 0.10

SpeedVerdict = Literal["faster", "slower", "unchanged"]
# Float rounding allowed when a ratio sits exactly on the band's edge.
_ROUNDING = 1e-9


class NoiseBand(BaseModel):
    """How far two identical models time apart on this worker, by the same method as the
    comparison: the original against a second session of the same file (its identical copy),
    timed as one more model in the same interleaved rounds.

    The rounds are cut into up to 5 consecutive blocks of at least 4 rounds; the identical
    pair's ratio of medians (original p50 / copy p50) is taken per block and over all rounds.
    `low`..`high` spans those ratios, and `noise` is the widest relative deviation from 1
    among them (1.06 and 1/0.94 both count as 6%), never below MIN_NOISE. Block medians
    rest on fewer runs than the whole-run median a ratio is reported with, so the band is on
    the wide (cautious) side.
    """

    low: float = Field(description="Lowest original / copy p50 ratio of the identical pair.")
    high: float = Field(description="Highest original / copy p50 ratio of the identical pair.")
    noise: float = Field(
        description=(
            "Half-width of the band as a fraction (0.04 = a ratio within ±4% of 1 is noise): "
            "the widest deviation of low..high from 1, at least MIN_NOISE."
        )
    )
    blocks: int = Field(description="Blocks of rounds the per-block ratios came from.")
    rounds: int = Field(description="Interleaved rounds timed.")

    @classmethod
    def from_ratios(cls, ratios: Sequence[float], *, blocks: int, rounds: int) -> NoiseBand:
        low, high = min(ratios), max(ratios)
        return cls(low=low, high=high, noise=_spread(low, high), blocks=blocks, rounds=rounds)

    def including(self, ratio: float) -> NoiseBand:
        """The band widened to hold `ratio`: a further identical pair (a result that is the
        original's own bytes) is one more measurement of the noise, not a speed change."""
        low, high = min(self.low, ratio), max(self.high, ratio)
        return self.model_copy(update={"low": low, "high": high, "noise": _spread(low, high)})

    def verdict(self, speedup: float) -> SpeedVerdict:
        """`speedup` = original p50 / result p50: faster or slower only beyond the band (a
        ratio on its edge, e.g. the one `including` widened it to, is inside)."""
        if speedup > (1 + self.noise) * (1 + _ROUNDING):
            return "faster"
        if speedup * (1 + self.noise) < 1 - _ROUNDING:
            return "slower"
        return "unchanged"


def _spread(low: float, high: float) -> float:
    if low <= 0:
        return float("inf")
    return max(MIN_NOISE, high - 1, 1 / low - 1)


def speed_verdict(speedup: float | None, band: NoiseBand | None) -> SpeedVerdict | None:
    """faster/slower/unchanged by the band; None without a ratio or a band (older reports)."""
    if speedup is None or band is None:
        return None
    return band.verdict(speedup)


def speed_text(speedup: float | None, band: NoiseBand | None) -> str:
    """`speedup` (original p50 / result p50) in words, with its noise band:
    "1.42× faster (noise ±4%)", "no measurable speed change (1.03×, noise ±5%)"."""
    if speedup is None or speedup <= 0:
        return "not measured"
    noise = "noise not measured" if band is None else f"noise ±{band.noise:.0%}"
    # Older reports have no band: the fixed floor is all that can be said.
    verdict = (band or NoiseBand.from_ratios([1.0], blocks=0, rounds=0)).verdict(speedup)
    if verdict == "unchanged":
        return f"no measurable speed change ({speedup:.2f}×, {noise})"
    factor = speedup if verdict == "faster" else 1 / speedup
    return f"{factor:.2f}× {verdict} ({noise})"


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

    runtime: str = Field(
        description=(
            '"CPU", "CUDA", "TensorRT fp16" or "TensorRT int8"; "CPU, 1 thread" where the '
            "multi-thread CPU figure was unstable (its noise band wider than UNSTABLE_NOISE)."
        )
    )
    provider: str = Field(description="ONNX Runtime execution provider behind it.")
    status: Literal["ok", "unavailable", "failed", "not applicable"] = Field(
        description="ok: timed here; otherwise `reason` says why not."
    )
    reason: str = Field(default="", description="Why there is no figure.")
    original: Latency | None = Field(default=None, description="The original model's latency.")
    compressed: Latency | None = Field(default=None, description="The compressed model's latency.")
    noise: NoiseBand | None = Field(
        default=None,
        description=(
            "The identical-copy noise band of this runtime's comparison; None where only the "
            "compressed model was timed (or in reports written before it was measured)."
        ),
    )

    @property
    def speedup(self) -> float | None:
        """Original p50 / compressed p50 (above 1 = faster); None without both figures."""
        if self.original is None or self.compressed is None or self.compressed.p50_ms <= 0:
            return None
        return self.original.p50_ms / self.compressed.p50_ms

    def speed_text(self) -> str:
        return speed_text(self.speedup, self.noise)


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


AgreementMetric = Literal["top1_agreement", "nn_agreement", "step_agreement", "map_iou", "cosine"]


class SampleSpread(BaseModel):
    """Fidelity of single samples: one number per sample, summarised as a distribution."""

    score: str = Field(
        description='What one sample scores, e.g. "cosine", "steps that agree", "IoU".'
    )
    samples: int = Field(description="Samples scored.")
    mean: float = Field(description="Mean score over the samples.")
    worst: float = Field(description="Lowest score of any sample.")
    floor: float = Field(description="Score below which a sample counts as broken.")
    below_floor: float = Field(description="Share of samples scoring below the floor, 0..1.")


class OutputFidelity(BaseModel):
    """How closely one output of the compressed model follows the original.

    A metric is None when it cannot be computed (e.g. the output contains NaN or Inf).
    `kind` says what the output was taken for and `metric` which agreement judges it
    (compress_engine/measure/agreement.py has the rules).
    """

    name: str = Field(description="Output name.")
    max_abs_diff: float | None = Field(description="Largest absolute element difference.")
    mean_abs_diff: float | None = Field(description="Mean absolute element difference.")
    cosine_similarity: float | None = Field(
        description="Cosine similarity of the flattened outputs (1.0 = same direction)."
    )
    top1_agreement: float | None = Field(
        default=None,
        description="Share of samples with the same argmax; only for class scores [N, C].",
    )
    kind: Literal["class-scores", "embedding", "sequence", "dense-map", "values"] = Field(
        default="values",
        description=(
            "What the output looks like: class scores [N, C], an embedding [N, D], a sequence "
            "[N, T, C], a dense map (3+ dims in [0, 1]) or other values."
        ),
    )
    metric: AgreementMetric = Field(
        default="cosine", description="The task-aware agreement used for this output."
    )
    metric_label: str = Field(default="cosine similarity", description="`metric` in words.")
    agreement: float | None = Field(
        default=None,
        description=(
            "The task-aware agreement, 0..1 (1 = the original's decisions kept): top-1, "
            "nearest-neighbour, per-step argmax, thresholded-map IoU, or cosine."
        ),
    )
    top5_agreement: float | None = Field(
        default=None,
        description="Class scores (over 5 classes): share whose original top-1 is in the top 5.",
    )
    sequence_match: float | None = Field(
        default=None,
        description=(
            "Sequences: share of samples whose whole argmax sequence, collapsed CTC-style "
            "(repeats merged, the blank dropped), equals the original's."
        ),
    )
    map_threshold: float | None = Field(
        default=None, description="Dense maps: the threshold a cell counts as positive above."
    )
    relative_l2: float | None = Field(
        default=None, description="||result - original|| / ||original|| over all samples."
    )
    range_error: float | None = Field(
        default=None,
        description=(
            "Largest absolute difference / the output's range: 1 for probability maps, else "
            "the original's max - min."
        ),
    )
    per_sample: SampleSpread | None = Field(
        default=None, description="The per-sample distribution; None for one number per sample."
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
