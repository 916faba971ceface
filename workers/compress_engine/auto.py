"""`auto`: which quantization variants to try for a model, and which result to hand back.

Measured here: dynamic int8 on convolution models runs several times slower than fp32 on
CPU (activations are quantized at run time around every ConvInteger), while static int8
(QDQ, calibrated) is faster; MatMul-heavy models (MLPs, transformers) gain from dynamic int8.
`auto` therefore picks by where the model's arithmetic is, and never returns a variant that
is not better than the original beyond the noise of its own timing (an identical copy of the
original timed beside the candidates): if nothing qualifies it says so and keeps the original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

from compress_engine.report import Latency, NoiseBand
from compress_engine.report_figures import speed_text

Objective = Literal["latency", "size"]

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
MATMUL_OPS = frozenset({"MatMul", "Gemm", "Attention", "LSTM"})
# The smallest speed-up (or size saving) worth handing back a changed model for; a speed-up
# must also clear the measured noise band of the timing.
MIN_GAIN = 0.05


def candidate_modes(macs_by_op_type: Mapping[str, int], *, has_data: bool) -> list[str]:
    """Quantization modes worth trying, most promising first."""
    conv = sum(v for k, v in macs_by_op_type.items() if k in CONV_OPS)
    matmul = sum(v for k, v in macs_by_op_type.items() if k in MATMUL_OPS)
    if conv > matmul:
        # Dynamic int8 leaves convolutions in float by default, so it can still shrink the
        # fully connected part; static int8 needs calibration samples.
        return ["static-int8", "dynamic-int8"] if has_data else ["dynamic-int8"]
    return ["dynamic-int8", "static-int8"] if has_data else ["dynamic-int8"]


@dataclass(frozen=True)
class Candidate:
    name: str
    size_bytes: int
    p50_ms: float
    meets_budget: bool
    below_floor: bool = False  # below evaluate.quality_floor: never the answer
    # False: nothing in it is quantized (e.g. the latency gate kept every op type in float),
    # a re-serialised original that could only win on timing noise: never the answer.
    quantized: bool = True

    @classmethod
    def measured(
        cls,
        name: str,
        size_bytes: int,
        latency: Latency,
        *,
        meets_budget: bool = True,
        below_floor: bool = False,
    ) -> Candidate:
        """A candidate from its measured latency (the median is what is compared)."""
        return cls(name, size_bytes, latency.p50_ms, meets_budget, below_floor)


@dataclass(frozen=True)
class Decision:
    pick: Candidate | None  # None: keep the original
    reason: str


def choose(
    original: Candidate,
    candidates: Sequence[Candidate],
    objective: Objective = "latency",
    noise: NoiseBand | None = None,
) -> Decision:
    """The variant to hand back, or None with the reason when none beats the original.

    `noise` is the band of the candidates' timing (an identical copy of the original timed
    in the same rounds): a speed-up counts only beyond it and MIN_GAIN, and a candidate
    slower than the original beyond it is never the answer, whatever the objective (the
    latency gate). Without a band MIN_GAIN stands in for it.
    """
    band = noise or NoiseBand(low=1.0, high=1.0, noise=MIN_GAIN, blocks=0, rounds=0)
    gain = max(MIN_GAIN, band.noise)
    within = [c for c in candidates if c.meets_budget and not c.below_floor and c.quantized]
    if objective == "latency":
        better = [c for c in within if _speedup(original, c) > 1 + gain]
        key = attrgetter("p50_ms", "size_bytes")
        what = "faster"
        beyond = (
            f" beyond the timing noise (±{band.noise:.0%}: how far an identical copy of the "
            "original timed from it)"
        )
    else:
        better = [
            c
            for c in within
            if c.size_bytes <= original.size_bytes * (1 - MIN_GAIN)
            and band.verdict(_speedup(original, c)) != "slower"
        ]
        key = attrgetter("size_bytes", "p50_ms")
        what = "smaller"
        beyond = f" without being slower beyond the timing noise (±{band.noise:.0%})"
    if not better:
        tried = ", ".join(
            f"{c.name} ({c.p50_ms:.3f} ms: {speed_text(_speedup(original, c), band)}, "
            f"{c.size_bytes:,} bytes"
            f"{'' if c.meets_budget else ', outside the budget'}"
            f"{', below the quality floor' if c.below_floor else ''}"
            f"{'' if c.quantized else ', nothing left quantized'})"
            for c in candidates
        )
        return Decision(
            None,
            f"No variant was at least {MIN_GAIN:.0%} {what} than the original "
            f"({original.p50_ms:.3f} ms, {original.size_bytes:,} bytes){beyond}, within the "
            "budget and the quality floor; "
            f"keep the original. Tried: {tried or 'nothing'}.",
        )
    pick = min(better, key=key)
    return Decision(
        pick,
        f"{pick.name}: p50 {pick.p50_ms:.3f} ms vs {original.p50_ms:.3f} ms, "
        f"{speed_text(_speedup(original, pick), band)}; "
        f"{pick.size_bytes:,} vs {original.size_bytes:,} bytes, within the budget.",
    )


def _speedup(original: Candidate, candidate: Candidate) -> float:
    """Original p50 / candidate p50 (above 1 = the candidate is faster)."""
    return original.p50_ms / candidate.p50_ms if candidate.p50_ms > 0 else float("inf")
