"""Per-layer sensitivity: quantize one layer at a time and measure how far the model's output
moves from fp32 on the same inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    op_type: str
    relative_error: float  # ||y_q - y|| / ||y|| on the first output, all samples together


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
) -> list[LayerSensitivity]:
    """Most sensitive first.

    candidates: (node name, op type) of quantizable nodes. quantize_only(node) returns a model
    with just that node quantized; run(path) returns the first output for each evaluation
    batch, in the same order as `reference` (the fp32 outputs). Measuring one layer at a time
    keeps the ranking free of the error that accumulates downstream in a fully quantized model.
    """
    ranked = []
    for index, (node, op_type) in enumerate(candidates):
        error = relative_error(reference, run(quantize_only(node)))
        ranked.append(LayerSensitivity(node=node, op_type=op_type, relative_error=error))
        if progress is not None:
            progress((index + 1) / len(candidates))
    return sorted(ranked, key=lambda layer: layer.relative_error, reverse=True)
