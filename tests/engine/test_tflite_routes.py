"""TFLite files for CNNs exported with dynamic dims at opset 11/12 (tests/third_party_models):
free dims are fixed at the run's shapes with batch 1 before conversion, onnx2tf's files are
checked in LiteRT, and where onnx2tf fails the second route (litert-torch, from the torch
module onnx2torch rebuilds) makes and checks them; the report names the route per file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import third_party_models as tpm
from compress_engine import Report, compress
from compress_engine.bundle import bundle_texts
from compress_engine.export.litert import LiteRTSession
from compress_engine.export.litert_route import litert_python
from compress_engine.export.pinned import pinned_copy
from compress_engine.export.tflite import CONVERTER_ENV, convert_tflite, converter_python
from compress_engine.export_configs import TfliteConfig

FAST = {"latency_runs": 3, "warmup": 1, "fidelity_samples": 16, "batch_sizes": []}


@pytest.fixture(scope="module", autouse=True)
def converters() -> None:
    if converter_python() is None or litert_python() is None:
        pytest.fail("a TFLite converter environment is missing: run `make install`")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def run_tflite(model: Path, data: Path, out: Path, **tflite: Any) -> Report:
    recipe = {
        "steps": [{"quantize": {"mode": "dynamic-int8"}}],
        "export": ["onnx", "tflite"],
        "tflite": {"precisions": ["fp32", "int8"], "representative_samples": 32, **tflite},
        "evaluate": FAST,
    }
    return compress(model, recipe, data, out_dir=out)


def tflite_rows(report: Report) -> dict[str, Any]:
    return {a.precision: a for a in report.artifacts if a.format == "tflite"}


@pytest.fixture(scope="module")
def classifier(models: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path, Path]:
    """The SE/grouped-conv classifier at opset 11 (batch, height and width free)."""
    model = tpm.se_grouped_classifier(models / "opset11", opset=11)
    data = tpm.digits_npz(models / "digits.npz", n=96)
    out = tmp_path_factory.mktemp("classifier")
    return run_tflite(model, data, out), data, out


@pytest.fixture(scope="module")
def recogniser(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The CNN + GRU recogniser at opset 12 (batch and width free)."""
    model = tpm.cnn_sequence_model(models, opset=12)
    data = tpm.digit_strips_npz(models / "strips.npz", n=48)
    return run_tflite(model, data, tmp_path_factory.mktemp("recogniser"))


def test_pinned_copy_fixes_free_dims_and_computes_the_same(models: Path, tmp_path: Path) -> None:
    source = tpm.se_grouped_classifier(models / "opset12", opset=12)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()

    fixed = pinned_copy(source, tmp_path / "model.onnx", {"input": [1, 1, 8, 8]})

    assert fixed.inputs == {"input": [1, 1, 8, 8]}
    assert fixed.outputs == {"logits": [1, 10]}  # inferred through the fixed graph
    pinned = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert pinned.get_inputs()[0].shape == [1, 1, 8, 8]
    assert pinned.get_outputs()[0].shape == [1, 10]
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    original = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        pinned.run(None, {"input": x})[0], original.run(None, {"input": x})[0], atol=1e-5
    )
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_dynamic_classifier_gets_checked_fp32_and_int8_files(
    classifier: tuple[Report, Path, Path],
) -> None:
    report, _, _ = classifier
    rows = tflite_rows(report)

    for row in rows.values():
        assert row.status == "ok", row.failure
        assert row.converter == "onnx2tf"
        assert row.input_shapes == {"input": [1, 1, 8, 8]}  # the dataset's shape, batch 1
        assert row.layouts == {"input": "NHWC"}
        assert row.check.runtime.startswith("LiteRT") and row.check.inputs == "evaluation split"
    assert rows["fp32"].check.conversion_max_abs_diff <= 1e-4
    assert report.accuracy is not None
    assert rows["fp32"].check.accuracy_top1 == pytest.approx(report.accuracy.original_top1)
    assert report.accuracy.original_top1 - rows["int8"].check.accuracy_top1 <= 0.05
    assert rows["int8"].size_bytes < 0.5 * rows["fp32"].size_bytes


def test_the_fixed_shape_file_runs_in_litert_like_the_original(
    classifier: tuple[Report, Path, Path], models: Path
) -> None:
    _, data, out = classifier
    x = np.load(data)["input"][:5]
    session = LiteRTSession(
        out / "model.fp32.tflite",
        input_names=["input"],
        onnx_outputs={"logits": [None, 10]},
        layouts={"input": "NHWC"},
        threads=1,
    )
    original = ort.InferenceSession(
        str(models / "opset11" / "se_classifier.onnx"), providers=["CPUExecutionProvider"]
    )

    assert session.batch == 1  # five samples run one by one
    np.testing.assert_allclose(
        session.run(None, {"input": x})[0], original.run(None, {"input": x})[0], atol=1e-4
    )


def test_recurrent_model_gets_int8_through_an_unrolled_loop(recogniser: Report) -> None:
    # TFLite's int8 calibration crashes (SIGSEGV) on the While loop of a GRU with open
    # shapes; with the width fixed, onnx2tf unrolls the steps and both files convert.
    rows = tflite_rows(recogniser)

    for row in rows.values():
        assert row.status == "ok", row.failure
        assert row.converter == "onnx2tf"
        assert row.input_shapes == {"input": [1, 1, 8, 32]}
    assert rows["fp32"].check.conversion_max_abs_diff <= 1e-4
    assert rows["int8"].check.cosine_similarity >= 0.99


def test_when_onnx2tf_fails_litert_torch_makes_and_checks_the_files(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A converter environment that dies is a real onnx2tf failure: the second route takes over.
    monkeypatch.setenv(CONVERTER_ENV, "/bin/false")
    model = tpm.se_grouped_classifier(models / "opset12", opset=12)
    data = tpm.digits_npz(models / "digits.npz", n=96)

    report = run_tflite(model, data, tmp_path)

    rows = tflite_rows(report)
    for row in rows.values():
        assert row.status == "ok", row.failure
        assert row.converter == "litert-torch"
        assert row.layouts == {}  # the torch module takes the ONNX layout
        assert row.input_shapes == {"input": [1, 1, 8, 8]}
        assert (tmp_path / row.name).is_file()
    assert rows["fp32"].check.conversion_max_abs_diff <= 1e-4
    assert rows["int8"].check.cosine_similarity >= 0.95  # ai-edge-quantizer's static int8
    saved = json.loads((tmp_path / "report.json").read_text())
    routes = [a.get("converter") for a in saved["artifacts"]]
    assert routes == [None, "litert-torch", "litert-torch"]
    markdown = bundle_texts(report)["REPORT.md"]
    assert "converted from the original model (float32) by litert-torch" in markdown
    session = LiteRTSession(
        tmp_path / "model.fp32.tflite",
        input_names=["input"],
        onnx_outputs={"logits": [None, 10]},
        layouts={},
        threads=1,
    )
    x = np.load(data)["input"][:3]
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"input": x})[0], reference.run(None, {"input": x})[0], atol=1e-4
    )


def test_a_converter_that_crashes_keeps_the_files_it_finished(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # TensorFlow can segfault in one precision: what the converter wrote before stays usable.
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        "printf 'TFL3' > model.fp32.tflite\n"
        'echo \'{"precisions": {"fp32": {"file": "model.fp32.tflite", "seconds": 1}}}\''
        " > result.json\n"
        "kill -SEGV $$\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv(CONVERTER_ENV, str(fake))
    model = tpm.se_grouped_classifier(models / "opset12", opset=12)

    conversion = convert_tflite(
        model, tmp_path / "work", TfliteConfig(precisions=["fp32", "int8"]), None
    )

    fp32, int8 = conversion.files
    assert fp32.path is not None and fp32.path.read_bytes() == b"TFL3"
    assert int8.path is None
    assert "converter process died (exit status -11" in int8.error
    assert int8.error.endswith("while converting it")
