"""The NNCF peer rows (benchmarks/peers.py) on a tiny CNN; nncf is a `bench` extra, so these
skip where it is not installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from benchmarks.models import BenchModel
from benchmarks.peers import nncf_accuracy_control, nncf_default

import model_builders

# Not pytest.importorskip: importing nncf directly would start its telemetry, which
# benchmarks.peers keeps off by importing it itself.
if importlib.util.find_spec("nncf") is None:
    pytest.skip("nncf is a `bench` extra: pip install -e '.[bench]'", allow_module_level=True)


@pytest.fixture
def tiny(tmp_path: Path) -> BenchModel:
    path = model_builders.export_tiny_cnn(tmp_path / "cnn.onnx")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 40).astype(np.int64)
    calib_path = tmp_path / "calib.npz"
    np.savez(calib_path, x=x, y=y)
    return BenchModel(
        name="tiny-cnn",
        onnx_path=path,
        kind="classifier",
        eval_inputs={"input": x},
        calib_inputs={"input": x},
        calib_path=calib_path,
        large_batch=8,
    )


def _check_quantized(path: Path, model: BenchModel) -> None:
    import onnx
    import onnxruntime as ort

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, model.batch(0, 4))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def test_it_quantizes_with_nncf_defaults_into_out(tiny: BenchModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = nncf_default(tiny, out)
    assert path.parent == out
    _check_quantized(path, tiny)


def test_it_quantizes_with_accuracy_control(tiny: BenchModel, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = nncf_accuracy_control(tiny, out)
    assert path.parent == out
    _check_quantized(path, tiny)
