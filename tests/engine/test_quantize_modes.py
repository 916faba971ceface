"""static-int8, fp16 and weight-int4 end to end: every result loads and runs in ONNX Runtime
(compress validates that) and stays close to the float32 original."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

import model_builders
from compress_engine import EngineError, Recipe, Report, compress
from compress_engine.data import Dataset, load_dataset


def _run(
    model: Path,
    out: Path,
    make_recipe: Callable[..., Recipe],
    data: Any = None,
    evaluate: dict[str, Any] | None = None,
    **quantize: Any,
) -> Report:
    return compress(model, make_recipe(evaluate, **quantize), data=data, out_dir=out)


# --- static int8 -----------------------------------------------------------------------


# Measured: drops of -0.33 (percentile, minmax) and +0.67 points (entropy) on 300 samples;
# one sample is 0.33 points, so the bounds leave room for kernel differences between CPUs.
@pytest.mark.parametrize(
    ("calibration", "max_drop"), [("percentile", 1.0), ("minmax", 1.0), ("entropy", 1.5)]
)
def test_static_int8_keeps_accuracy_on_a_trained_cnn(
    trained_cnn_path: Path,
    pattern_npz: Path,
    make_recipe: Callable[..., Recipe],
    tmp_path: Path,
    calibration: str,
    max_drop: float,
) -> None:
    report = _run(
        trained_cnn_path,
        tmp_path,
        make_recipe,
        data=pattern_npz,
        mode="static-int8",
        calibration=calibration,
    )

    acc = report.accuracy
    assert acc is not None and acc.samples == 300 and acc.classes == 10
    assert acc.original_top1 > 0.7  # the CNN learned the patterns
    assert abs(acc.drop_points) <= max_drop
    assert acc.original_top5 is not None and acc.result_top5 is not None
    assert acc.drop_points == pytest.approx((acc.original_top1 - acc.result_top1) * 100)
    fid = report.fidelity
    assert fid.inputs == "evaluation split" and fid.samples == 300
    assert fid.summary.top1_agreement is not None and fid.summary.top1_agreement >= 0.97
    assert fid.summary.cosine_similarity is not None and fid.summary.cosine_similarity > 0.99
    assert report.size_ratio is not None and report.size_ratio < 0.35
    q = report.quantization
    assert q is not None and q.mode == "static-int8" and q.calibration == calibration
    assert q.weight_type == "int8" and q.activation_type == "uint8" and q.per_channel
    assert q.calibration_samples == 256
    assert q.op_types.get("Conv") == 2 and q.op_types.get("Gemm") == 2
    assert report.data is not None
    assert (report.data.calibration_samples, report.data.evaluation_samples) == (300, 300)
    assert report.artifacts[0].precision == "int8-static"
    assert any("evaluation split" in n for n in report.notes)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_static_int8_needs_data(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="needs calibration data"):
        _run(cnn_path, tmp_path / "out", make_recipe, mode="static-int8")
    assert not (tmp_path / "out" / "report.json").exists()


def test_static_int8_needs_a_calibration_split(
    cnn_path: Path, pattern_npz: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="non-empty calibration"):
        _run(
            cnn_path,
            tmp_path,
            make_recipe,
            data=pattern_npz,
            evaluate={"calibration_fraction": 0.0},
            mode="static-int8",
        )


@pytest.mark.parametrize("opset", [11, 12])
def test_static_int8_upgrades_old_opsets_for_per_channel(
    models_dir: Path, make_recipe: Callable[..., Recipe], tmp_path: Path, opset: int
) -> None:
    old = model_builders.export_tiny_cnn(models_dir / f"cnn_opset{opset}.onnx", opset=opset)
    x, _ = model_builders.pattern_dataset(64, seed=3)

    report = _run(old, tmp_path, make_recipe, data=Dataset({"x": x}), mode="static-int8")

    assert report.quantization is not None
    assert report.quantization.opset_upgraded_from == opset
    assert report.quantization.quantized_nodes > 0
    assert any(f"upgraded from opset {opset} to 13" in n for n in report.notes)
    assert report.fidelity.summary.cosine_similarity is not None
    assert report.fidelity.summary.cosine_similarity > 0.99
    assert report.accuracy is None  # no labels
    assert any("no labels" in n for n in report.notes)


def test_static_int8_excludes_by_name_and_op_type(
    cnn_path: Path, pattern_npz: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    first_conv = next(n.name for n in onnx.load(str(cnn_path)).graph.node if n.op_type == "Conv")

    report = _run(
        cnn_path,
        tmp_path,
        make_recipe,
        data=pattern_npz,
        mode="static-int8",
        exclude=[first_conv],
        exclude_op_types=["Gemm"],
        symmetric_activations=True,
        samples=32,
    )

    q = report.quantization
    assert q is not None
    assert q.op_types.get("Conv") == 1 and "Gemm" not in q.op_types
    assert q.excluded == [first_conv] and q.excluded_op_types == ["Gemm"]
    assert q.activation_type == "int8" and q.calibration_samples == 32


def test_static_int8_refuses_unknown_exclusions(
    cnn_path: Path, pattern_npz: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    with pytest.raises(EngineError, match="not in the model: nope"):
        _run(
            cnn_path, tmp_path, make_recipe, data=pattern_npz, mode="static-int8", exclude=["nope"]
        )


def test_dataset_names_must_match_the_model(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    data = Dataset({"pixels": np.zeros((4, 1, 8, 8), np.float32)})

    with pytest.raises(EngineError, match=r"arrays \['pixels'\] but the model's inputs are"):
        _run(cnn_path, tmp_path, make_recipe, data=data, mode="static-int8")


def test_dynamic_int8_with_a_dataset_reports_accuracy(
    trained_cnn_path: Path, pattern_npz: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    report = _run(
        trained_cnn_path,
        tmp_path,
        make_recipe,
        data=load_dataset(pattern_npz),
        evaluate={"calibration_fraction": 0.25, "max_evaluation_samples": 100},
    )

    assert report.accuracy is not None and report.accuracy.samples == 100
    assert report.data is not None and report.data.calibration_samples == 150
    assert report.fidelity.inputs == "evaluation split"
    assert Report.model_validate_json(report.model_dump_json()) == report


def test_labels_out_of_range_are_explained(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    data = Dataset({"x": np.zeros((8, 1, 8, 8), np.float32)}, np.full(8, 12, np.int64))

    with pytest.raises(EngineError, match="only 10 classes"):
        _run(cnn_path, tmp_path, make_recipe, data=data)


# --- fp16 ------------------------------------------------------------------------------


@pytest.mark.parametrize("keep_io_types", [True, False])
def test_fp16_halves_the_size_and_keeps_outputs(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path, keep_io_types: bool
) -> None:
    report = _run(cnn_path, tmp_path, make_recipe, mode="fp16", keep_io_types=keep_io_types)

    assert report.size_ratio is not None and 0.45 < report.size_ratio < 0.6
    s = report.fidelity.summary
    assert s.cosine_similarity is not None and s.cosine_similarity > 0.9999
    assert s.top1_agreement == 1.0
    q = report.quantization
    assert q is not None and q.weight_type == "float16" and q.op_types.get("Conv") == 2
    assert report.artifacts[0].name == "model.fp16.onnx"
    assert any("GPUs and NPUs" in n for n in report.notes)
    model = onnx.load(str(tmp_path / "model.fp16.onnx"))
    io_type = model.graph.input[0].type.tensor_type.elem_type
    expected = onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16
    assert io_type == expected
    # The checker refuses graphs whose nodes are out of order (keep_io_types' input Casts).
    onnx.checker.check_model(model)
    assert report.artifacts[0].status == "ok"


def test_fp16_keeps_blocked_ops_and_excluded_nodes_in_float32(
    cnn_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    first_conv = next(n.name for n in onnx.load(str(cnn_path)).graph.node if n.op_type == "Conv")

    report = _run(
        cnn_path, tmp_path, make_recipe, mode="fp16", op_block_list=["Gemm"], exclude=[first_conv]
    )

    q = report.quantization
    assert q is not None and "Gemm" not in q.op_types and q.op_types.get("Conv") == 1


# --- weight-only int4 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "max_ratio"),
    [({}, 0.2), ({"block_size": 128, "symmetric": False, "accuracy_level": 4}, 0.2)],
)
def test_weight_int4_shrinks_an_mlp_and_keeps_outputs(
    mlp_path: Path,
    make_recipe: Callable[..., Recipe],
    tmp_path: Path,
    settings: dict[str, Any],
    max_ratio: float,
) -> None:
    report = _run(mlp_path, tmp_path, make_recipe, mode="weight-int4", **settings)

    assert report.size_ratio is not None and report.size_ratio < max_ratio
    s = report.fidelity.summary
    assert s.cosine_similarity is not None and s.cosine_similarity > 0.98
    q = report.quantization
    assert q is not None and q.quantized_nodes == 4 and q.op_types == {"Gemm": 4}
    assert q.block_size == settings.get("block_size", 32)
    assert q.weight_type == ("int4" if settings.get("symmetric", True) else "uint4")
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int4.onnx")).graph.node}
    assert "MatMulNBits" in ops and "Gemm" not in ops


def test_weight_int4_respects_exclusions(
    mlp_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    last = [n.name for n in onnx.load(str(mlp_path)).graph.node if n.op_type == "Gemm"][-1]

    report = _run(mlp_path, tmp_path, make_recipe, mode="weight-int4", exclude=[last])

    assert report.quantization is not None and report.quantization.quantized_nodes == 3


def test_weight_int4_explains_models_without_matmuls(
    models_dir: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    conv_only = model_builders.write_conv_only_model(models_dir / "conv_only_int4.onnx")

    with pytest.raises(EngineError, match="no MatMul"):
        _run(conv_only, tmp_path, make_recipe, mode="weight-int4")


def test_labels_for_a_non_classifier_give_a_note_not_a_failure(
    models_dir: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    conv_only = model_builders.write_conv_only_model(models_dir / "conv_only_labels.onnx")
    x, y = model_builders.pattern_dataset(40, seed=5)

    report = _run(
        conv_only,
        tmp_path,
        make_recipe,
        data=Dataset({"x": x}, y),
        mode="static-int8",
        symmetric_weights=False,
    )

    assert report.accuracy is None
    assert any("not [samples, classes]" in n for n in report.notes)
    assert report.fidelity.inputs == "evaluation split" and report.fidelity.samples == 20
    assert report.quantization is not None and report.quantization.symmetric is False


def test_a_fixed_batch_model_is_fed_whole_batches(
    models_dir: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    fixed = model_builders.export_tiny_cnn(models_dir / "cnn_fixed.onnx", dynamic_batch=False)
    x, y = model_builders.pattern_dataset(40, seed=6)

    report = _run(fixed, tmp_path, make_recipe, data=Dataset({"x": x}, y), mode="static-int8")

    assert report.quantization is not None and report.quantization.calibration_samples == 20
    assert report.fidelity.samples == 20 and report.accuracy is not None
