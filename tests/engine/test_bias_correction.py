"""Bias correction for depthwise convolutions after static int8: it removes a systematic
output shift, keeps the graph valid and fusable, is chosen by measurement under "auto", and
every build of a search follows the first build's choice."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import depthwise_models
import model_builders
from compress_engine import Recipe, compress
from compress_engine.bundle import report_markdown
from compress_engine.configs import StaticInt8Config
from compress_engine.data import Dataset
from compress_engine.passes import static_quantize
from compress_engine.passes.base import PassContext, PassResult
from compress_engine.passes.bias_correction import MIN_GAIN, correct_biases, depthwise_convs
from compress_engine.passes.static_quantize import StaticInt8Quantize
from compress_engine.passes.tunable import Builder
from compress_engine.report import QuantChoice

CHANNELS = 8
# The drift write_offset_depthwise builds in: 8 weights x 0.4 int8 steps x mean input 1.
BUILT_IN_DRIFT = 8 * depthwise_models.ROUNDING_OFFSET / 127


def _quantize(model: Path, work: Path, x: np.ndarray, **cfg: object) -> tuple[Path, Path]:
    """(the QDQ model, the float graph it was quantized from) without bias correction."""
    work.mkdir(parents=True, exist_ok=True)
    # 8-bit weights whatever this CPU's `auto` format (7-bit without VNNI): the drift built into
    # the model is sized in 8-bit steps.
    cfg = {"int8_format": "u8s8", **cfg}
    config = StaticInt8Config(mode="static-int8", bias_correction="off", **cfg)
    ctx = PassContext(work_dir=work, data=Dataset({"input": x}), batch_size=32)
    res = StaticInt8Quantize(config).quantize(model, work / "int8.onnx", ctx)
    return res.model_path, work / "prepared.onnx"


def _conv_means(path: Path, node: str, x: np.ndarray) -> np.ndarray:
    """Per channel, the mean of `node`'s output on x (the graph run as written)."""
    model = onnx.load(str(path))
    out = next(n.output[0] for n in model.graph.node if n.name == node)
    model.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts)
    (y,) = session.run([out], {"input": x})
    return y.mean(axis=(0, 2, 3))


def _feeds(x: np.ndarray, batch: int = 32) -> list[dict[str, np.ndarray]]:
    return [{"input": x[i : i + batch]} for i in range(0, len(x), batch)]


@pytest.mark.parametrize("bias", [True, False], ids=["int32-bias", "no-bias"])
def test_it_removes_a_built_in_rounding_drift(tmp_path: Path, bias: bool) -> None:
    model = depthwise_models.write_offset_depthwise(tmp_path / "dw.onnx", bias=bias)
    calib = depthwise_models.positive_images(128, seed=1)
    fresh = depthwise_models.positive_images(256, seed=2)  # not fitted on
    quant, float_graph = _quantize(model, tmp_path / "q", calib)

    fixed = tmp_path / "corrected.onnx"
    done = correct_biases(float_graph, quant, fixed, _feeds(calib), tmp_path / "work")

    want = _conv_means(float_graph, "dw", fresh)
    before = _conv_means(quant, "dw", fresh) - want
    after = _conv_means(fixed, "dw", fresh) - want
    # The construction's drift is there, down in even channels and up in odd ones...
    assert np.all(np.abs(before) > 0.5 * BUILT_IN_DRIFT)
    assert np.all(before[::2] < 0) and np.all(before[1::2] > 0)
    # ...and the correction removes it on samples it never saw, channel by channel.
    assert np.all(np.abs(after) < 0.1 * np.abs(before))
    assert np.abs(after).max() < 0.1 * BUILT_IN_DRIFT
    assert done.largest == pytest.approx(np.abs(before).max(), rel=0.2)


@pytest.mark.parametrize("bias", [True, False], ids=["int32-bias", "no-bias"])
def test_the_corrected_graph_is_valid_and_keeps_an_int32_bias(tmp_path: Path, bias: bool) -> None:
    model = depthwise_models.write_offset_depthwise(tmp_path / "dw.onnx", bias=bias)
    calib = depthwise_models.positive_images(64, seed=1)
    quant, float_graph = _quantize(model, tmp_path / "q", calib)
    fixed = tmp_path / "corrected.onnx"

    correct_biases(float_graph, quant, fixed, _feeds(calib), tmp_path / "work")

    corrected = onnx.load(str(fixed))
    onnx.checker.check_model(corrected, full_check=True)
    inits = {t.name: t for t in corrected.graph.initializer}
    producer = {o: n for n in corrected.graph.node for o in n.output}
    conv = next(n for n in corrected.graph.node if n.op_type == "Conv")
    # Still a conv an integer kernel can take: its bias an int32 tensor behind a DQ.
    dq = producer[conv.input[2]]
    assert dq.op_type == "DequantizeLinear"
    assert numpy_helper.to_array(inits[dq.input[0]]).dtype == np.int32
    assert depthwise_convs(corrected)[0].name == "dw"
    x = depthwise_models.positive_images(16, seed=3)
    got = ort.InferenceSession(str(fixed)).run(None, {"input": x})[0]
    ref = ort.InferenceSession(str(model)).run(None, {"input": x})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_auto_keeps_it_when_it_helps_and_records_both_builds(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    model = depthwise_models.write_offset_depthwise(tmp_path / "dw.onnx")
    data = Dataset({"input": depthwise_models.positive_images(512, seed=4)})

    result = compress(model, make_recipe(mode="static-int8"), data=data, out_dir=tmp_path / "out")

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (choice,) = [c for c in report["quantization"]["choices"] if c["option"] == "bias_correction"]
    without, with_ = choice["trials"]
    assert (without["label"], with_["label"]) == ("without", "with")
    assert with_["fidelity"] > without["fidelity"]
    assert choice["chosen"] == "on"
    assert "held-out calibration samples" in choice["reason"]
    assert without["size_bytes"] > 0 and with_["size_bytes"] > 0
    # REPORT.md lists the choice and both builds.
    markdown = report_markdown(result)
    assert "## Quantization choices" in markdown
    assert "| `bias_correction` | on | It removed" in markdown
    assert f"| `bias_correction` | without | {without['fidelity']:.5f} |" in markdown
    assert f"| `bias_correction` | with | {with_['fidelity']:.5f} |" in markdown


def test_auto_decides_by_the_held_out_gain_on_a_mobilenet(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    x, y = depthwise_models.digits_32(seed=0)
    model = depthwise_models.export_mobilenet(tmp_path / "mobilenet.onnx")  # untrained: fast
    data = Dataset({"input": x[:400]}, labels=y[:400])

    report = compress(model, make_recipe(mode="static-int8"), data=data, out_dir=tmp_path / "out")

    assert report.quantization is not None
    (choice,) = [c for c in report.quantization.choices if c.option == "bias_correction"]
    assert "5 depthwise convolutions" in choice.reason
    without, with_ = (t.fidelity for t in choice.trials)
    assert without is not None and with_ is not None
    gained = (with_ - without) / (1 - without) >= MIN_GAIN
    assert choice.chosen == ("on" if gained else "off")


def test_nothing_is_recorded_without_depthwise_convolutions(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    x, _ = model_builders.pattern_dataset(64, seed=3)

    report = compress(
        cnn_path, make_recipe(mode="static-int8"), data=Dataset({"x": x}), out_dir=tmp_path
    )

    assert report.quantization is not None
    assert not [c for c in report.quantization.choices if c.option == "bias_correction"]


@pytest.mark.parametrize(("setting", "later"), [("auto", "on"), ("off", "off")])
def test_every_build_of_a_search_follows_the_first_builds_choice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, later: str
) -> None:
    model = depthwise_models.write_offset_depthwise(tmp_path / "dw.onnx", channels=4)
    data = Dataset({"input": depthwise_models.positive_images(256, seed=5, channels=4)})
    config = StaticInt8Config(mode="static-int8", bias_correction=setting)
    builder = Builder(
        technique=StaticInt8Quantize(config),
        model_in=model,
        work=tmp_path / "tuning",
        seed=0,
        data=data,
        batch_size=32,
    )
    asked: list[str] = []
    real = static_quantize.choose_bias_correction

    def spy(setting: str, *args: object, **kwargs: object) -> object:
        asked.append(setting)
        return real(setting, *args, **kwargs)

    monkeypatch.setattr(static_quantize, "choose_bias_correction", spy)

    first = builder.first(tmp_path / "first.onnx", lambda _f: None)
    again = builder.build([], "trial")
    in_float = builder.build(["dw"], "trial")  # nothing left to correct

    # Only the first build decides; the others are told its decision and report its trials.
    assert asked == [setting, later, later]
    decided = _bias_choices(first)
    assert [c.chosen for c in decided] == (["on"] if setting == "auto" else [])
    assert _bias_choices(again) == _bias_choices(in_float) == decided
    # The same graph built again is corrected (or not) alike: the same int32 biases.
    assert _int_biases(again.model_path) == _int_biases(first.model_path)


def _bias_choices(res: PassResult) -> list[QuantChoice]:
    assert res.details is not None
    return [c for c in res.details.choices if c.option == "bias_correction"]


def _int_biases(path: Path) -> list[int]:
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    if len(conv.input) < 3 or not conv.input[2]:
        return []
    return numpy_helper.to_array(inits[producer[conv.input[2]].input[0]]).tolist()
