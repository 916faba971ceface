"""Compression passes, one module per technique, and their registry.

Importing this package registers every pass; none of them imports torch or onnxruntime
until it runs.
"""

from __future__ import annotations

from compress_engine.passes import quantize as _quantize  # noqa: F401  (registers)
from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.registry import get_pass, list_passes, pass_for_step, register

__all__ = [
    "Pass",
    "PassContext",
    "PassInfo",
    "PassResult",
    "get_pass",
    "list_passes",
    "pass_for_step",
    "register",
]
