"""Searches over quantization variants: per-layer sensitivity and accuracy-aware fallback.

Both take plain callables (build a variant, score it), so they work with any pass that can
keep chosen nodes in float.
"""

from compress_engine.search.accuracy_aware import SearchOutcome, Trial, fallback_search
from compress_engine.search.sensitivity import LayerSensitivity, rank_single_layer_error

__all__ = [
    "LayerSensitivity",
    "SearchOutcome",
    "Trial",
    "fallback_search",
    "rank_single_layer_error",
]
