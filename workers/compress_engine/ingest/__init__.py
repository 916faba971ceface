"""Ingest: recognise an uploaded model's format and convert it to the canonical ONNX form.

Importing this package is cheap (no torch, onnx or TensorFlow): the web app uses
`detect_format`, `parse_input_shapes` and `forward_signature` (or
`signature_from_members`, before the upload) at upload time; `convert_to_onnx` runs in a worker.
"""

from __future__ import annotations

from compress_engine.ingest.convert import IngestResult, convert_to_onnx
from compress_engine.ingest.formats import HOW_TO_EXPORT, ModelFormat, detect_format
from compress_engine.ingest.shapes import InputSpec, parse_input_shapes
from compress_engine.ingest.signature import (
    ForwardSignature,
    forward_signature,
    name_input_shapes,
    signature_from_members,
    suggested_shapes,
)

__all__ = [
    "HOW_TO_EXPORT",
    "ForwardSignature",
    "IngestResult",
    "InputSpec",
    "ModelFormat",
    "convert_to_onnx",
    "detect_format",
    "forward_signature",
    "name_input_shapes",
    "parse_input_shapes",
    "signature_from_members",
    "suggested_shapes",
]
