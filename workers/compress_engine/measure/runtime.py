"""ONNX Runtime sessions, configured the same way for every model we compare."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime


def create_session(
    path: Path, *, providers: Sequence[str], threads: int
) -> onnxruntime.InferenceSession:
    """An InferenceSession with fixed threading and full graph optimisation.

    inter-op threads = 1 and sequential execution: the comparison should measure the model,
    not scheduler noise.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only; warnings would flood worker logs
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
