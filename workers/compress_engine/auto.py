"""`auto`: which quantization variants to try for a model, and which result to hand back.

Measured here: dynamic int8 on convolution models runs several times slower than fp32 on
CPU (activations are quantized at run time around every ConvInteger), while static int8
(QDQ, calibrated) is faster; MatMul-heavy models (MLPs, transformers) gain from dynamic int8.
`auto` therefore picks by where the model's arithmetic is, and never returns a variant that
is not better than the original: if nothing qualifies it says so and keeps the original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Literal

Objective = Literal["latency", "size"]

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
MATMUL_OPS = frozenset({"MatMul", "Gemm", "Attention", "LSTM"})
# Differences below this are timer or rounding noise, not an improvement.
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


@dataclass(frozen=True)
class Decision:
    pick: Candidate | None  # None: keep the original
    reason: str


def choose(
    original: Candidate, candidates: Sequence[Candidate], objective: Objective = "latency"
) -> Decision:
    """The variant to hand back, or None with the reason when none beats the original."""
    within = [c for c in candidates if c.meets_budget]
    if objective == "latency":
        better = [c for c in within if c.p50_ms <= original.p50_ms * (1 - MIN_GAIN)]
        key = attrgetter("p50_ms", "size_bytes")
        what = "faster"
    else:
        better = [c for c in within if c.size_bytes <= original.size_bytes * (1 - MIN_GAIN)]
        key = attrgetter("size_bytes", "p50_ms")
        what = "smaller"
    if not better:
        tried = ", ".join(
            f"{c.name} ({c.p50_ms:.3f} ms, {c.size_bytes:,} bytes"
            f"{'' if c.meets_budget else ', outside the budget'})"
            for c in candidates
        )
        return Decision(
            None,
            f"No variant was at least {MIN_GAIN:.0%} {what} than the original "
            f"({original.p50_ms:.3f} ms, {original.size_bytes:,} bytes) within the budget; "
            f"keep the original. Tried: {tried or 'nothing'}.",
        )
    pick = min(better, key=key)
    return Decision(
        pick,
        f"{pick.name}: p50 {pick.p50_ms:.3f} ms vs {original.p50_ms:.3f} ms, "
        f"{pick.size_bytes:,} vs {original.size_bytes:,} bytes, within the budget.",
    )
