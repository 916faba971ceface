"""ONNX Runtime sessions, configured the same way for every model we compare."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

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


_FLOAT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
}


def adapt_feed(
    session: onnxruntime.InferenceSession, feed: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """`feed` with float arrays cast to the float type each session input declares.

    A float16 model with float16 inputs then runs on the same samples as its float32 original.
    """
    get_inputs = getattr(session, "get_inputs", None)  # test doubles may not have it
    if get_inputs is None:
        return dict(feed)
    wanted = {i.name: _FLOAT_TYPES.get(i.type) for i in get_inputs()}
    out = {}
    for name, arr in feed.items():
        target = wanted.get(name)
        if target is not None and arr.dtype.kind == "f" and arr.dtype != target:
            arr = arr.astype(target)
        out[name] = arr
    return out
