"""TFLite export: every precision converted in the converter's own environment, run in the
LiteRT interpreter and compared with the original before it is offered; a precision or a
model the converter cannot handle fails on its own row while the other files are kept."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import model_builders
from compress_engine import Report, compress
from compress_engine.export.litert import LiteRTSession
from compress_engine.export.litert_route import LITERT_ENV
from compress_engine.export.tflite import CONVERTER_ENV, converter_python
from compress_engine.export.verify import conversion_failure
from compress_engine.report import Fidelity, OutputFidelity

FAST = {"latency_runs": 5, "warmup": 1, "fidelity_samples": 8, "batch_sizes": []}
TEACHER_SAMPLES = 1000


@pytest.fixture(scope="module", autouse=True)
def converter() -> None:
    if converter_python() is None:
        pytest.fail("the TFLite converter environment is missing: run `make install`")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("digits")
    x, y = model_builders.digits_dataset()
    teacher = model_builders.export_digits_teacher(
        root / "teacher.onnx", x[:TEACHER_SAMPLES], y[:TEACHER_SAMPLES]
    )
    np.savez(root / "digits.npz", x=x[TEACHER_SAMPLES:], y=y[TEACHER_SAMPLES:])
    return teacher, root / "digits.npz"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Report, Path]]:
    def make(model: Path, data: Path | None, **recipe: Any) -> tuple[Report, Path]:
        out = tmp_path_factory.mktemp("out")
        recipe = {"export": ["onnx", "tflite"], "evaluate": FAST, **recipe}
        return compress(model, recipe, data, out_dir=out), out

    return make


@pytest.fixture(scope="module")
def every_precision(
    digits: tuple[Path, Path], run: Callable[..., tuple[Report, Path]]
) -> tuple[Report, Path]:
    teacher, data = digits
    return run(teacher, data, steps=[{"quantize": {"mode": "static-int8"}}])


def by_name(report: Report) -> dict[str, Any]:
    return {a.name: a for a in report.artifacts}


def test_every_precision_is_converted_checked_and_written(
    every_precision: tuple[Report, Path],
) -> None:
    report, out = every_precision
    arts = by_name(report)

    assert list(arts) == [
        "model.int8.onnx",
        "model.fp32.tflite",
        "model.fp16.tflite",
        "model.dynamic-int8.tflite",
        "model.int8.tflite",
    ]
    for a in arts.values():
        assert a.status == "ok", a.failure
        assert (out / a.name).stat().st_size == a.size_bytes > 0
        assert a.check is not None and a.check.inputs == "evaluation split"
        assert a.check.latency is not None and a.check.latency.p50_ms > 0
    tflite = [a for a in arts.values() if a.format == "tflite"]
    assert all(a.layouts == {"input": "NHWC"} for a in tflite)
    assert all(a.source == "the original model (float32)" for a in tflite)
    assert all(a.check.runtime.startswith("LiteRT") for a in tflite)
    assert arts["model.int8.onnx"].check.runtime.startswith("ONNX Runtime")
    assert arts["model.int8.onnx"].opset == 17
    # The on-disk report is the same one, failed rows and checks included.
    assert Report.model_validate_json((out / "report.json").read_text()) == report


def test_fp32_matches_onnx_runtime_and_int8_keeps_accuracy(
    every_precision: tuple[Report, Path],
) -> None:
    report, _ = every_precision
    arts = by_name(report)
    assert report.accuracy is not None
    original = report.accuracy.original_top1

    fp32, int8 = arts["model.fp32.tflite"].check, arts["model.int8.tflite"].check
    assert fp32.conversion_max_abs_diff is not None and fp32.conversion_max_abs_diff <= 1e-4
    assert fp32.accuracy_top1 == pytest.approx(original)
    assert int8.accuracy_top1 is not None and original - int8.accuracy_top1 <= 0.01
    assert arts["model.int8.tflite"].size_bytes <= 0.35 * arts["model.fp32.tflite"].size_bytes
    assert arts["model.fp16.tflite"].size_bytes < 0.6 * arts["model.fp32.tflite"].size_bytes


def test_litert_session_matches_the_report(
    digits: tuple[Path, Path], every_precision: tuple[Report, Path]
) -> None:
    _, out = every_precision
    x = np.load(digits[1])["x"][:6]
    session = LiteRTSession(
        out / "model.fp32.tflite",
        input_names=["input"],
        onnx_outputs={"logits": [None, 10]},
        layouts={"input": "NHWC"},
        threads=1,
    )
    import onnxruntime as ort

    reference = ort.InferenceSession(str(digits[0])).run(None, {"input": x})[0]
    (got,) = session.run(None, {"input": x})
    # The file takes NHWC; the session hides that and batches a six-sample feed.
    assert got.shape == (6, 10)
    np.testing.assert_allclose(got, reference, atol=1e-4)


def test_int8_inputs_and_outputs_when_asked(
    digits: tuple[Path, Path], run: Callable[..., tuple[Report, Path]]
) -> None:
    teacher, data = digits
    report, out = run(
        teacher,
        data,
        steps=[{"quantize": {"mode": "dynamic-int8"}}],
        tflite={"precisions": ["int8"], "int8_io": True, "representative_samples": 100},
    )
    (int8,) = [a for a in report.artifacts if a.format == "tflite"]

    assert int8.status == "ok" and int8.input_dtypes == {"input": "int8"}
    assert report.accuracy is not None and int8.check.accuracy_top1 is not None
    assert report.accuracy.original_top1 - int8.check.accuracy_top1 <= 0.02
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(str(out / int8.name)).get_input_details()[0]
    assert np.dtype(detail["dtype"]) == np.int8 and detail["quantization"][0] > 0


def test_without_data_full_integer_fails_alone(
    mlp_path: Path, run: Callable[..., tuple[Report, Path]]
) -> None:
    report, out = run(
        mlp_path,
        None,
        steps=[{"quantize": {"mode": "dynamic-int8"}}],
        tflite={"precisions": ["fp32", "int8"]},
    )
    arts = by_name(report)
    fp32, int8 = arts["model.fp32.tflite"], arts["model.int8.tflite"]

    assert fp32.status == "ok" and fp32.layouts == {}  # 2-D input: layout unchanged
    assert fp32.check.inputs == "random"
    assert int8.status == "failed" and "needs representative samples" in int8.failure
    assert not (out / int8.name).exists()
    assert [a.name for a in report.files] == ["model.int8.onnx", "model.fp32.tflite"]


def test_an_op_tflite_lacks_fails_every_tflite_file_not_the_onnx_one(
    tmp_path: Path, run: Callable[..., tuple[Report, Path]]
) -> None:
    model = model_builders.write_det_model(tmp_path / "det.onnx")
    report, out = run(
        model,
        None,
        steps=[{"quantize": {"mode": "fp16", "keep_io_types": True}}],
        tflite={"precisions": ["fp32", "dynamic-int8"]},
    )
    arts = by_name(report)

    assert arts["model.fp16.onnx"].status == "ok"
    fp32, dyn = arts["model.fp32.tflite"], arts["model.dynamic-int8.tflite"]
    # onnx2tf writes an fp32 file with a Flex op: only running it in LiteRT shows the gap.
    assert fp32.status == "failed" and "FlexMatrixDeterminant" in fp32.failure
    assert dyn.status == "failed" and "MatrixDeterminant" in dyn.failure
    assert "no TFLite builtin" in dyn.failure
    assert sorted(p.name for p in out.glob("*.tflite")) == []
    saved = json.loads((out / "report.json").read_text())
    assert [a["status"] for a in saved["artifacts"]] == ["ok", "failed", "failed"]


def test_pruned_model_is_the_conversion_source(
    cnn_path: Path, run: Callable[..., tuple[Report, Path]]
) -> None:
    report, _ = run(
        cnn_path,
        None,
        steps=[{"prune": {"amount": 0.5}}, {"quantize": {"mode": "dynamic-int8"}}],
        tflite={"precisions": ["fp32"]},
    )
    (fp32,) = [a for a in report.artifacts if a.format == "tflite"]

    assert fp32.status == "ok" and fp32.source.startswith("the model after Prun")
    # Against its source (the pruned float model) it is exact; against the original it
    # carries the pruning's change.
    assert fp32.check.conversion_max_abs_diff <= 1e-4
    assert fp32.check.max_abs_diff > fp32.check.conversion_max_abs_diff


@pytest.mark.parametrize(
    ("python", "expected"),
    [
        ("/nonexistent/python", "environment is not installed"),
        ("/bin/false", "the converter process died (exit status 1)"),
    ],
)
def test_a_missing_or_broken_converter_is_a_per_file_failure(
    mlp_path: Path,
    run: Callable[..., tuple[Report, Path]],
    monkeypatch: pytest.MonkeyPatch,
    python: str,
    expected: str,
) -> None:
    # Both routes broken (onnx2tf's and litert-torch's environments): each file's row names
    # each route's reason.
    monkeypatch.setenv(CONVERTER_ENV, python)
    monkeypatch.setenv(LITERT_ENV, python)
    report, _ = run(mlp_path, None, steps=[{"quantize": {"mode": "dynamic-int8"}}])

    onnx_file, *tflite, int8 = report.artifacts
    assert onnx_file.status == "ok" and len(tflite) == 3
    for a in tflite:
        assert a.status == "failed" and a.converter is None
        onnx2tf, litert = a.failure.split("; litert-torch: ")
        assert onnx2tf.startswith("onnx2tf: ") and expected in onnx2tf and expected in litert
    # Without a dataset no route can calibrate int8: it says so without starting a converter.
    assert int8.status == "failed" and "needs representative samples" in int8.failure


def test_relative_paths_reach_the_converter(
    mlp_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The converter runs in its own working directory: the CLI's relative --out must not
    # leak into it as a relative path.
    monkeypatch.chdir(tmp_path)
    recipe = {
        "steps": [{"quantize": {"mode": "dynamic-int8"}}],
        "export": ["tflite"],
        "tflite": {"precisions": ["fp32"]},
        "evaluate": FAST,
    }
    report = compress(mlp_path, recipe, out_dir=Path("out"))

    assert [a.status for a in report.artifacts] == ["ok", "ok"]
    assert (tmp_path / "out" / "model.fp32.tflite").is_file()


class _UpsampleConcat(__import__("torch").nn.Module):
    """3-channel image model with Resize and Concat (onnx2tf runs such models on sample images
    it would download; the converter must find its offline stand-in)."""

    def __init__(self) -> None:
        import torch

        super().__init__()
        torch.manual_seed(0)
        self.down = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = torch.nn.Upsample(scale_factor=2, mode="nearest")
        self.head = torch.nn.Conv2d(11, 4, 3, padding=1)

    def forward(self, x: Any) -> Any:
        import torch

        return self.head(torch.cat([self.up(self.down(x)), x], dim=1))


def _gelu_mlp() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))


@pytest.mark.parametrize(
    ("build", "shape", "layouts"),
    [
        # Image input and image output: both channel-last in the file, mapped back.
        (_UpsampleConcat, (1, 3, 16, 16), {"input": "NHWC"}),
        # GELU's Erf has no TFLite builtin; the converter's pseudo-op form keeps it builtin.
        (_gelu_mlp, (1, 16), {}),
    ],
    ids=["upsample-concat", "gelu-mlp"],
)
def test_image_and_gelu_models_convert_exactly(
    tmp_path: Path,
    run: Callable[..., tuple[Report, Path]],
    build: Callable[[], Any],
    shape: tuple[int, ...],
    layouts: dict[str, str],
) -> None:
    import torch

    model = model_builders.export_torch_model(build(), torch.randn(*shape), tmp_path / "m.onnx")
    report, _ = run(
        model,
        None,
        steps=[{"quantize": {"mode": "dynamic-int8"}}],
        tflite={"precisions": ["fp32"]},
    )
    (fp32,) = [a for a in report.artifacts if a.format == "tflite"]

    assert fp32.status == "ok", fp32.failure
    assert fp32.layouts == layouts
    assert fp32.check.conversion_max_abs_diff <= 1e-4


@pytest.mark.parametrize(
    ("precision", "cosine", "offered"),
    [("fp32", 0.99995, True), ("fp32", 0.9990, False), ("int8", 0.95, True), ("int8", 0.5, False)],
)
def test_a_file_that_strays_from_its_source_is_not_offered(
    precision: str, cosine: float, offered: bool
) -> None:
    # The converter's own error decides: float files must match their source, quantized ones
    # may lose a little but not collapse (onnx2tf has produced wrong attention outputs).
    out = OutputFidelity(
        name="y", max_abs_diff=0.1, mean_abs_diff=0.01, cosine_similarity=cosine,
        top1_agreement=None,
    )  # fmt: skip
    failure = conversion_failure(precision, Fidelity(samples=8, summary=out, per_output=[out]))

    assert (failure is None) == offered
    if not offered:
        assert f"cosine similarity {cosine:.4f}" in failure and precision in failure
