"""ModelPress compression engine: a plain library (no Django) that turns an ONNX model and a
recipe into compressed artifacts plus an honest before/after report.

Importing this package is cheap: torch and onnxruntime (and onnx) load only when a model is
actually inspected, compressed or measured.
"""

from __future__ import annotations

from compress_engine._version import ENGINE_VERSION
from compress_engine.api import compress
from compress_engine.configs import Recipe, default_recipe
from compress_engine.data import Dataset, load_dataset
from compress_engine.errors import EngineError
from compress_engine.inspect import ModelInfo, TensorInfo, inspect_onnx
from compress_engine.passes import PassInfo, list_passes
from compress_engine.report import Report

__version__ = ENGINE_VERSION

__all__ = [
    "ENGINE_VERSION",
    "Dataset",
    "EngineError",
    "ModelInfo",
    "PassInfo",
    "Recipe",
    "Report",
    "TensorInfo",
    "compress",
    "default_recipe",
    "inspect_onnx",
    "list_passes",
    "load_dataset",
]
