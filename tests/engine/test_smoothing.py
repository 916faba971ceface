"""SmoothQuant-style smoothing: exact in float, and better int8 where one activation channel
is far larger than the rest (models built here with onnx.helper)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress_engine import EngineError, Recipe, compress
from compress_engine.passes import smoothing_graph
from compress_engine.report import QuantChoice, Report
from model_builders import save_graph

K, F, SEQ = 16, 32, 6


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value.astype(np.float32), name)


def _save(nodes: list, inits: list, outputs: dict[str, list], path: Path) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SEQ, K])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, dims) for o, dims in outputs.items()],
        inits,
    )
    return save_graph(graph, path)


def qkv_model(path: Path, seed: int = 0) -> Path:
    """x + b feeds Q and K projections (MatMul) and a residual Add, so it cannot be folded
    anywhere: smoothing inserts one Div shared by both; a flattened copy feeds V (Gemm,
    transB: its weight's input channels are columns)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Add", ["x", "b"], ["h"], name="bias"),
        helper.make_node("MatMul", ["h", "wq"], ["q"], name="q"),
        helper.make_node("MatMul", ["h", "wk"], ["k"], name="k"),
        helper.make_node("Reshape", ["h", "flat"], ["h2"], name="flatten"),
        helper.make_node("Gemm", ["h2", "wv"], ["v"], name="v", transB=1),
        helper.make_node("Add", ["h", "q"], ["residual"], name="residual"),
    ]
    inits = [
        _init("b", rng.normal(size=K)),
        _init("wq", rng.normal(size=(K, K))),
        _init("wk", rng.normal(size=(K, K))),
        _init("wv", rng.normal(size=(F, K))),
        numpy_helper.from_array(np.array([-1, K], dtype=np.int64), "flat"),
    ]
    tokens = ["batch", SEQ, K]
    return _save(nodes, inits, {"k": tokens, "v": ["rows", F], "residual": tokens}, path)


def ln_model(path: Path, *, outlier: float = 1.0, seed: int = 0) -> Path:
    """A transformer-like block: LayerNormalization whose scale has one channel `outlier`
    times the others, read by weight rows as much smaller (how trained transformers carry
    outlier channels), feeds an MLP and a second projection; every reader of its output is a
    MatMul, so smoothing folds into it."""
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.5, 1.5, size=K)
    gamma[3] *= outlier
    w1 = rng.normal(scale=K**-0.5, size=(K, F))
    w3 = rng.normal(scale=K**-0.5, size=(K, K))
    w1[3] /= outlier
    w3[3] /= outlier
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["h"], name="ln"),
        helper.make_node("MatMul", ["h", "w1"], ["a"], name="up"),
        helper.make_node("Relu", ["a"], ["r"], name="act"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="down"),
        helper.make_node("MatMul", ["h", "w3"], ["p"], name="proj"),
        helper.make_node("Add", ["m", "p"], ["y"], name="sum"),
    ]
    inits = [
        _init("gamma", gamma),
        _init("beta", rng.normal(scale=0.1, size=K)),
        _init("w1", w1),
        _init("w2", rng.normal(scale=F**-0.5, size=(F, K))),
        _init("w3", w3),
    ]
    return _save(nodes, inits, {"y": ["batch", SEQ, K]}, path)


def _outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _smooth_in_float(src: Path, dst: Path, x: np.ndarray) -> tuple[onnx.ModelProto, int, int]:
    model = onnx.load(str(src))
    groups = smoothing_graph.find_groups(model, {"MatMul", "Gemm"}, set())
    maxima = smoothing_graph.activation_maxima(
        src, [g.tensor for g in groups], [{"x": x}], dst.parent
    )
    smoothed, folded = smoothing_graph.apply_smoothing(model, groups, maxima, alpha=0.5)
    onnx.save(model, str(dst))
    return model, smoothed, folded


def _inputs(seed: int = 1, samples: int = 8) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(samples, SEQ, K)).astype(np.float32)
    x[..., 5] *= 30.0  # an outlier channel, so the factors differ a lot between channels
    return x


def test_a_shared_input_is_divided_once_and_the_float_model_is_unchanged(tmp_path: Path) -> None:
    src = qkv_model(tmp_path / "qkv.onnx")
    x = _inputs()

    model, smoothed, folded = _smooth_in_float(src, tmp_path / "smoothed.onnx", x)

    assert (smoothed, folded) == (2, 0)
    divs = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "Div"}
    assert set(divs) == {"h", "h2"}
    readers = {n.name: n.input[0] for n in model.graph.node if n.op_type != "Div"}
    assert (readers["q"], readers["k"], readers["v"]) == (divs["h"], divs["h"], divs["h2"])
    assert (readers["residual"], readers["flatten"]) == ("h", "h")
    original = onnx.load(str(src))
    assert not np.allclose(
        numpy_helper.to_array(_named(model, "wq")), numpy_helper.to_array(_named(original, "wq"))
    )
    fresh = _inputs(seed=7)  # not the samples the factors came from
    smoothed_out, original_out = _outputs(tmp_path / "smoothed.onnx", fresh), _outputs(src, fresh)
    for got, want in zip(smoothed_out, original_out, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_smoothing_folds_into_a_layer_norm_read_only_by_matmuls(tmp_path: Path) -> None:
    src = ln_model(tmp_path / "ln.onnx", outlier=50.0)
    x = np.random.default_rng(3).normal(size=(8, SEQ, K)).astype(np.float32)

    model, smoothed, folded = _smooth_in_float(src, tmp_path / "smoothed.onnx", x)

    assert (smoothed, folded) == (2, 1)  # h (folded) and the Relu output (a Div)
    assert [n.input[0] for n in model.graph.node if n.op_type == "Div"] == ["r"]
    gamma = numpy_helper.to_array(_named(model, "gamma"))
    assert not np.allclose(gamma, numpy_helper.to_array(_named(onnx.load(str(src)), "gamma")))
    fresh = np.random.default_rng(9).normal(size=(8, SEQ, K)).astype(np.float32)
    (got,), (want,) = _outputs(tmp_path / "smoothed.onnx", fresh), _outputs(src, fresh)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_zero_channels_and_extreme_ranges_give_safe_factors() -> None:
    x = np.array([0.0, 1.0, 1e12, 4.0], dtype=np.float32)
    w = np.array([1.0, 0.0, 1e-12, 1.0], dtype=np.float32)

    s = smoothing_graph.smoothing_scales(x, w, alpha=0.5)

    assert s[0] == 1.0 and s[1] == 1.0  # a zero on either side leaves the channel alone
    assert s[2] == smoothing_graph.MAX_SCALE and s[3] == pytest.approx(2.0)


def _npz(path: Path, samples: int = 96) -> Path:
    x = np.random.default_rng(5).normal(size=(samples, SEQ, K)).astype(np.float32)
    np.savez(path, x=x)
    return path


def _smoothing_choice(report: Report) -> QuantChoice:
    assert report.quantization is not None
    return next(c for c in report.quantization.choices if c.option == "smooth_quant")


def test_auto_smooths_an_outlier_channel_and_int8_gets_closer_to_float(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    model = ln_model(tmp_path / "outlier.onnx", outlier=50.0)
    data = _npz(tmp_path / "x.npz")

    def run(smooth: str) -> Report:
        recipe = make_recipe(None, mode="dynamic-int8", smooth_quant=smooth)
        return compress(model, recipe, data=data, out_dir=tmp_path / smooth)

    auto, off = run("auto"), run("off")

    choice = _smoothing_choice(auto)
    assert choice.chosen == "on" and choice.reason.startswith("Kept")
    without, with_ = choice.trials
    assert (without.label, with_.label) == ("without smoothing", "with smoothing")
    assert with_.fidelity is not None and without.fidelity is not None
    assert with_.fidelity > without.fidelity
    assert _smoothing_choice(off).chosen == "off"
    # The 50x channel costs the others most of their int8 levels; smoothing gives them back.
    err_auto = 1 - (auto.fidelity.summary.cosine_similarity or 0.0)
    err_off = 1 - (off.fidelity.summary.cosine_similarity or 0.0)
    assert err_auto < 0.5 * err_off


def test_auto_leaves_a_model_without_outliers_alone(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    model = ln_model(tmp_path / "plain.onnx")
    recipe = make_recipe(None, mode="dynamic-int8")

    report = compress(model, recipe, data=_npz(tmp_path / "x.npz"), out_dir=tmp_path / "out")

    choice = _smoothing_choice(report)
    assert choice.chosen == "off" and "No activation outliers" in choice.reason
    assert choice.trials == []
    assert not any(
        n.op_type == "Div" for n in onnx.load(str(tmp_path / "out/model.int8.onnx")).graph.node
    )


def test_static_int8_smooths_once_for_a_search(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    model = qkv_model(tmp_path / "qkv.onnx")
    x = _inputs(samples=64)
    np.savez(tmp_path / "x.npz", x=x)
    recipe = make_recipe(None, mode="static-int8", smooth_quant="on", sensitivity=True)

    report = compress(model, recipe, data=tmp_path / "x.npz", out_dir=tmp_path / "out")

    assert report.quantization is not None
    assert [c.chosen for c in report.quantization.choices if c.option == "smooth_quant"] == ["on"]
    assert report.sensitivity  # the ranking's builds read the smoothed graph too
    built = onnx.load(str(tmp_path / "out/model.int8.onnx"))
    divs = [n for n in built.graph.node if n.op_type == "Div" and n.name.startswith("SmoothQuant")]
    assert len(divs) == 2
    # ONNX Runtime's static quantizer has no Div kernel: the divisions read x in float.
    producers = {o: n.op_type for n in built.graph.node for o in n.output}
    assert all(producers.get(d.input[0]) != "DequantizeLinear" for d in divs)
    assert report.fidelity.summary.cosine_similarity is not None
    assert report.fidelity.summary.cosine_similarity > 0.99


def test_on_needs_data(tmp_path: Path, make_recipe: Callable[..., Recipe]) -> None:
    model = qkv_model(tmp_path / "qkv.onnx")
    with pytest.raises(EngineError, match="smooth_quant: on"):
        compress(
            model, make_recipe(None, mode="dynamic-int8", smooth_quant="on"), out_dir=tmp_path / "o"
        )


def _named(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)
