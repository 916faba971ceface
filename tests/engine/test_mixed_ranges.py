"""Static int8: an output Concat joining inputs of very different ranges (box coordinates and
sigmoid scores, as in a YOLO-style head) is kept in float, so each input keeps its own scale
(models built here with onnx.helper)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compress_engine import Recipe, compress
from compress_engine.passes.mixed_ranges import OPTION, choose_split, output_concats
from compress_engine.report import QuantChoice, Report
from model_builders import save_graph

K, BOXES, CLASSES = 8, 4, 3
PIXELS = 300.0


def _init(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)


def head_model(path: Path, *, scale: float = PIXELS, reader: str | None = None) -> Path:
    """x [batch, K] -> boxes (sigmoid x `scale`, 0..scale) and class scores (sigmoid, 0..1),
    joined by a Concat into y [batch, BOXES + CLASSES, 1] through a Reshape (a node carrying
    the joined tensor to the output). reader="MatMul": a layer reads the join instead."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "w_box"], ["box_logits"], name="box_layer"),
        helper.make_node("Sigmoid", ["box_logits"], ["box_unit"], name="box_sigmoid"),
        helper.make_node("Mul", ["box_unit", "pixels"], ["boxes"], name="to_pixels"),
        helper.make_node("MatMul", ["x", "w_cls"], ["cls_logits"], name="cls_layer"),
        helper.make_node("Sigmoid", ["cls_logits"], ["scores"], name="cls_sigmoid"),
        helper.make_node("Concat", ["boxes", "scores"], ["joined"], name="join", axis=1),
    ]
    inits = [
        _init("w_box", rng.normal(size=(K, BOXES))),
        _init("w_cls", rng.normal(size=(K, CLASSES))),
        _init("pixels", np.array(scale)),
    ]
    if reader == "MatMul":
        nodes.append(helper.make_node("MatMul", ["joined", "w_out"], ["y"], name="reader"))
        inits.append(_init("w_out", rng.normal(size=(BOXES + CLASSES, 2))))
        out_dims: list = ["batch", 2]
    else:
        nodes.append(helper.make_node("Reshape", ["joined", "shape"], ["y"], name="to_3d"))
        inits.append(numpy_helper.from_array(np.array([-1, BOXES + CLASSES, 1]), "shape"))
        out_dims = ["batch", BOXES + CLASSES, 1]
    graph = helper.make_graph(
        nodes,
        "head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)],
        inits,
    )
    return save_graph(graph, path)


def _inputs(samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(samples, K)).astype(np.float32)


def _npz(path: Path) -> Path:
    np.savez(path, x=_inputs(128, seed=1))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _choice(report: Report) -> QuantChoice | None:
    assert report.quantization is not None
    return next((c for c in report.quantization.choices if c.option == OPTION), None)


def test_the_scores_keep_their_precision_only_with_the_join_in_float(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    model, data = head_model(tmp_path / "head.onnx"), _npz(tmp_path / "x.npz")
    x = _inputs(256, seed=9)  # not the calibration samples
    want = _run(model, x)[:, BOXES:, 0]

    def scores(split: bool) -> tuple[Report, np.ndarray, Path]:
        out = tmp_path / f"split-{split}"
        recipe = make_recipe(None, mode="static-int8", split_mixed_ranges=split)
        report = compress(model, recipe, data=data, out_dir=out)
        built = next(out.glob("model.*.onnx"))
        return report, _run(built, x)[:, BOXES:, 0], out

    plain, plain_scores, _ = scores(False)
    split, split_scores, out = scores(True)

    # One scale for 0..300 is ~1.2 per step: the 0..1 scores round to at most 2 values.
    assert len(np.unique(plain_scores)) <= 2
    assert np.abs(plain_scores - want).max() > 0.3
    # Their own 0..1 scale (~0.004 per step) plus the int8 MatMul's error.
    assert len(np.unique(split_scores)) > 50
    assert np.abs(split_scores - want).max() < 0.05

    off = _choice(plain)
    assert off is not None and off.chosen == "off"
    choice = _choice(split)
    assert choice is not None and choice.chosen == "on"
    spread = re.search(r"the smallest (\d+)x below the joined range", choice.reason)
    assert spread is not None and int(spread.group(1)) > 100  # 0..1 against 0..300
    assert split.quantization is not None
    kept = split.quantization.excluded
    assert len(kept) == 2  # the Concat and the Reshape carrying it to the output
    saved = json.loads((out / "report.json").read_text())
    recorded = [c for c in saved["quantization"]["choices"] if c["option"] == OPTION]
    assert recorded and recorded[0]["chosen"] == "on"
    # The layers around the join are still int8.
    assert split.quantization.op_types.get("MatMul") == 2


def test_a_join_of_similar_ranges_is_quantized_as_usual(
    tmp_path: Path, make_recipe: Callable[..., Recipe]
) -> None:
    model, data = head_model(tmp_path / "head.onnx", scale=4.0), _npz(tmp_path / "x.npz")

    report = compress(
        model, make_recipe(None, mode="static-int8"), data=data, out_dir=tmp_path / "o"
    )

    choice = _choice(report)
    assert choice is not None and choice.chosen == "off"
    assert "similar" in choice.reason
    assert report.quantization is not None and report.quantization.excluded == []


def test_only_joins_that_reach_an_output_without_a_layer_are_candidates(tmp_path: Path) -> None:
    to_output = onnx.load(str(head_model(tmp_path / "a.onnx")))
    into_layer = onnx.load(str(head_model(tmp_path / "b.onnx", reader="MatMul")))

    (found,) = output_concats(to_output)
    assert (found.name, found.members, found.output) == ("join", ("join", "to_3d"), "y")
    assert found.inputs == ("boxes", "scores")
    # A MatMul reading the join quantizes it as its input anyway: keeping the Concat in
    # float would not help.
    assert output_concats(into_layer) == []
    assert output_concats(to_output, excluded={"join"}) == []


def test_an_add_of_very_different_ranges_is_left_alone(tmp_path: Path) -> None:
    # A sum is one quantity with its own range; each input has its own scale going in.
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "pixels"], ["large"], name="large"),
            helper.make_node("Sigmoid", ["x"], ["small"], name="small"),
            helper.make_node("Add", ["large", "small"], ["y"], name="sum"),
        ],
        "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", K])],
        [_init("pixels", np.array(PIXELS))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "sum.onnx"))

    assert output_concats(model) == []
    assert choose_split(True, tmp_path / "sum.onnx", [{"x": _inputs(8, 3)}], tmp_path) == (
        [],
        None,
    )


def test_the_first_decision_is_reused_by_every_later_build(tmp_path: Path) -> None:
    model = head_model(tmp_path / "head.onnx")
    cache = tmp_path / "mixed-ranges.json"
    feeds = [{"x": _inputs(32, 2)}]

    first, choice = choose_split(True, model, feeds, tmp_path, cache=cache)
    # Anything a later build would decide differently (here: told not to split) is ignored
    # once the first build's decision is cached.
    fresh, _ = choose_split(False, model, feeds, tmp_path)
    again, again_choice = choose_split(False, model, feeds, tmp_path, cache=cache)

    assert first == ["join", "to_3d"] and fresh == []
    assert (again, again_choice) == (first, choice)
