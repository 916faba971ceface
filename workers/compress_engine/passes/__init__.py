"""Compression passes, one module per technique, and their registry.

Importing this package registers every pass; none of them imports torch or onnxruntime
until it runs.
"""

from __future__ import annotations

# Importing a pass module registers it.
from compress_engine.passes import auto as _auto  # noqa: F401
from compress_engine.passes import distill as _distill  # noqa: F401
from compress_engine.passes import fp16 as _fp16  # noqa: F401
from compress_engine.passes import llm_weights as _llm  # noqa: F401
from compress_engine.passes import prune as _prune  # noqa: F401
from compress_engine.passes import quantize as _quantize  # noqa: F401
from compress_engine.passes import static_quantize as _static  # noqa: F401
from compress_engine.passes import weight_int4 as _int4  # noqa: F401
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
