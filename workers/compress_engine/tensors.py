"""What a model looks like from outside: its inputs, outputs and headline figures.

Plain pydantic types with no ONNX import, so the report (and anything below `inspect`) can
name them without reading a model.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class TensorInfo(BaseModel):
    """One graph input or output."""

    name: str = Field(description="Tensor name, used as the feed/fetch key.")
    dtype: str = Field(description='Element type as a numpy name, e.g. "float32", "int64".')
    shape: list[int | str | None] = Field(
        description="Dimensions: int = fixed, str = symbolic (e.g. 'batch'), None = unknown."
    )
    rank_known: bool = Field(
        default=True, description="False when the model does not declare the rank at all."
    )


class ModelInfo(BaseModel):
    """What an ONNX model looks like from outside."""

    ir_version: int = Field(description="ONNX IR version of the file.")
    opset: int = Field(description="Opset of the default (ai.onnx) domain.")
    opsets: dict[str, int] = Field(
        default_factory=dict, description="Opset per domain ('' is ai.onnx)."
    )
    producer: str = Field(description="Tool that wrote the file, e.g. 'pytorch 2.14.1'.")
    inputs: list[TensorInfo] = Field(description="Graph inputs that need a value.")
    outputs: list[TensorInfo] = Field(description="Graph outputs.")
    parameters: int = Field(description="Elements in initializers and Constant nodes.")
    nodes: int = Field(description="Node count, subgraphs included.")
    op_types: dict[str, int] = Field(description="Node count per op type.")
    size_bytes: int = Field(
        default=0, description="Size on disk in bytes: the .onnx file plus its external data."
    )
