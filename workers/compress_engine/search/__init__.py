"""Searches over quantization variants: fallback units, per-layer sensitivity and the
accuracy-aware fallback search.

They take plain callables (build a variant, score it) and read graphs with `onnx` only, so
they work with any pass that can keep chosen nodes in float; compress_engine.tuning binds
them to ONNX Runtime, the run's data and its evaluator.
"""

from compress_engine.search.accuracy_aware import SearchOutcome, Trial, fallback_search
from compress_engine.search.sensitivity import (
    LayerSensitivity,
    rank_single_layer_error,
    search_order,
)
from compress_engine.search.units import FallbackUnit, fallback_units, pick_units

__all__ = [
    "FallbackUnit",
    "LayerSensitivity",
    "SearchOutcome",
    "Trial",
    "fallback_search",
    "fallback_units",
    "pick_units",
    "rank_single_layer_error",
    "search_order",
]
