"""Non-zero parameter counts: what unstructured pruning changes and dense size does not show."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.measure.params import iter_graphs

if TYPE_CHECKING:
    import onnx


def count_nonzero_parameters(model: onnx.ModelProto, base_dir: str | Path = "") -> int:
    """Non-zero elements of all initializers.

    Weights stored as external data are read from `base_dir` (the model file's folder), one
    tensor at a time, so the model may be loaded with load_external_data=False.

    Integer tensors count raw values: a quantized weight whose stored value is 0 counts as
    zero, which matches the float zero only for symmetric quantization (zero point 0).
    """
    import numpy as np
    from onnx import numpy_helper

    total = 0
    for graph in iter_graphs(model.graph):
        for tensor in graph.initializer:
            total += int(np.count_nonzero(numpy_helper.to_array(tensor, str(base_dir))))
    return total
