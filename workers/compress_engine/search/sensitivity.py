"""Per-layer sensitivity: quantize one layer (with the tensors it reads and writes) and
nothing else, and measure how far the model's output moves from fp32 on the same inputs; then
order the layers for the fallback search by the error each removes per byte it costs.

Quantizing one layer alone, rather than excluding it from a fully quantized model, keeps the
ranking free of the error every other quantized tensor adds: with everything else quantized,
that shared error dominates and every layer looks alike (a nearly flat ranking).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A layer whose quantization moves the output by less than this (relative) changed nothing
# that keeping it in float could win back.
NEGLIGIBLE_ERROR = 1e-7


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    relative_error: float  # ||y_q - y|| / ||y|| on the first output, all samples together
    fallback_bytes: int = 0  # how much larger the file gets when this layer stays float


def relative_error(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    ref = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in reference])
    got = np.concatenate([np.asarray(c, dtype=np.float64).ravel() for c in candidate])
    norm = float(np.linalg.norm(ref))
    return float(np.linalg.norm(got - ref)) / max(norm, np.finfo(np.float64).eps)


def rank_single_layer_error(
    candidates: Sequence[tuple[str, str]],
    quantize_only: Callable[[str], Path],
    run: Callable[[Path], list[np.ndarray]],
    reference: Sequence[np.ndarray],
    progress: Callable[[float], None] | None = None,
    *,
    fallback_bytes: Mapping[str, int] | None = None,
) -> list[LayerSensitivity]:
    """Most sensitive first.

    candidates: (node name, op type) of quantizable layers. quantize_only(node) returns a
    model with just that layer quantized; run(path) returns the first output for each batch,
    in the same order as `reference` (the fp32 outputs). fallback_bytes: what keeping each
    layer in float costs, carried into the result for search_order.
    """
    ranked = []
    for index, (node, op_type) in enumerate(candidates):
        error = relative_error(reference, run(quantize_only(node)))
        cost = (fallback_bytes or {}).get(node, 0)
        ranked.append(LayerSensitivity(node, op_type, error, cost))
        if progress is not None:
            progress((index + 1) / len(candidates))
    return sorted(ranked, key=lambda layer: layer.relative_error, reverse=True)


def search_order(ranked: Sequence[LayerSensitivity], *, free_bytes: int) -> list[LayerSensitivity]:
    """The layers worth trying in float, best value first.

    Independent rounding errors add up as squares, so keeping a layer in float removes about
    relative_error**2 of the model's squared error; the layers are ordered by that per byte
    the file grows, where costs below `free_bytes` count as free (a small head or a
    weightless Add costs nothing that matters). Among similar errors the cheaper layer goes
    first, while a layer with a far larger error still leads even when it is bigger. Layers
    whose quantization changed nothing measurable are left out.
    """
    useful = [layer for layer in ranked if layer.relative_error > NEGLIGIBLE_ERROR]
    return sorted(
        useful,
        key=lambda layer: (
            -(layer.relative_error**2) / max(layer.fallback_bytes, free_bytes, 1),
            layer.node,
        ),
    )
