"""ONNX Runtime sessions, configured the same way for every model we compare."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
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
    # ONNX Runtime's NCHWc layout rewrite crashes the process (SIGSEGV) on some float16
    # graphs (convolutions feeding a recurrent layer); float16 convs never take that path on
    # a CPU anyway, so it costs nothing to leave it out for them.
    disabled = ["NchwcTransformer"] if _file_has_float16(Path(path)) else []
    return ort.InferenceSession(
        str(path), sess_options=opts, providers=list(providers), disabled_optimizers=disabled
    )


def _file_has_float16(path: Path) -> bool:
    try:
        stat = path.stat()
    except OSError:  # ONNX Runtime reports a missing file better
        return False
    return _has_float16(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _has_float16(path: str, _mtime_ns: int, _size: int) -> bool:
    """Whether any initializer or graph input/output of the model is float16 (weights that
    live in external data are not read). Cached per file version: a run opens the original
    and its copy many times (timing, fidelity, every tuning trial), and parsing a large graph
    each time would cost more than the session it guards."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # ONNX Runtime reports a bad file better
        return False
    half = onnx.TensorProto.FLOAT16
    if any(t.data_type == half for t in graph.initializer):
        return True
    values = [*graph.input, *graph.output, *graph.value_info]
    return any(v.type.tensor_type.elem_type == half for v in values)


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
