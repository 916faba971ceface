"""Static int8: when percentile calibration cannot histogram an activation, the pass falls
back to minmax and says so, instead of handing ONNX Runtime's error to the user."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress_engine import compress

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 8, "batch_sizes": []}


def _large_offset_model(path: Path) -> Path:
    """x @ W + 1e5 @ W2: the middle activation is about 1e5 and varies by a few units, so
    2048 histogram bins over its range are narrower than float32's spacing there (numpy:
    "Too many bins for data range"). The smallest construct that reproduces it."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W"),
        numpy_helper.from_array(np.full((8,), 1e5, np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "B"], ["a"], name="offset"),
        helper.make_node("MatMul", ["a", "W2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "large_offset",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def test_percentile_calibration_falls_back_to_minmax_and_says_so(tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    model = _large_offset_model(tmp_path / "offset.onnx")
    x = np.random.default_rng(1).standard_normal((64, 8)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x)

    class Reader:
        def __init__(self) -> None:
            self.feeds = iter([{"x": x[:16]}])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    # The failure this guards against, straight from ONNX Runtime.
    with pytest.raises(ValueError, match="Too many bins for data range"):
        quantize_static(
            model, tmp_path / "raw.onnx", Reader(), calibrate_method=CalibrationMethod.Percentile
        )

    report = compress(
        model,
        {
            "steps": [{"quantize": {"mode": "static-int8", "calibration": "percentile"}}],
            "evaluate": FAST,
        },
        tmp_path / "data.npz",
        out_dir=tmp_path / "out",
    )

    q = report.quantization
    assert q is not None and q.calibration == "minmax" and q.quantized_nodes > 0
    note = next(n for n in report.notes if "calibrated with minmax instead" in n)
    assert note.startswith("Percentile calibration failed on this model's activation ranges")
    assert "Too many bins" in note
    assert report.fidelity.summary.cosine_similarity is not None
    assert report.fidelity.summary.cosine_similarity > 0.99
