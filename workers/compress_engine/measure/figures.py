"""Figures of a model file itself (no run needed): size, parameters, non-zero parameters,
MACs and op types, as the report's ModelMeasurement holds them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from compress_engine.measure.macs import count_macs
from compress_engine.measure.params import count_parameters, op_type_counts
from compress_engine.measure.size import sha256_file
from compress_engine.measure.sparsity import count_nonzero_parameters
from compress_engine.onnx_files import model_bytes
from compress_engine.report import Latency, ModelMeasurement


def static_figures(path: Path, macs_shapes: Mapping[str, list[int]]) -> dict[str, Any]:
    """Figures of the file itself: size, parameters, non-zero parameters, MACs, op types."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts = op_type_counts(proto)
    macs = count_macs(proto, macs_shapes)
    try:
        nonzero: int | None = count_nonzero_parameters(proto, base_dir=path.parent)
    except Exception:  # unreadable external data: the figure is left out, not the run
        nonzero = None
    return {
        "size_bytes": model_bytes(path),
        "parameters": count_parameters(proto),
        "nonzero_parameters": nonzero,
        "nodes": sum(counts.values()),
        "op_types": counts,
        "sha256": sha256_file(path),
        "macs": macs.total,
        "macs_by_op_type": macs.by_op_type,
        "macs_uncounted_op_types": macs.uncounted_op_types,
    }


def measurement(figures: Mapping[str, Any], by_batch: dict[str, Latency]) -> ModelMeasurement:
    """The file's figures with its latency per batch size (the first is the headline one)."""
    return ModelMeasurement(
        **figures, latency=next(iter(by_batch.values())), latency_by_batch=by_batch
    )
