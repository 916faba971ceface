"""The deployment bundle: what it holds, and that its examples run the bundled models."""

from __future__ import annotations

import ast
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import model_builders
from compress_engine import Report, compress
from compress_engine.bundle import bundle_binaries, bundle_texts, iter_bundle, write_bundle
from compress_engine.cli import main
from compress_engine.export.litert import LiteRTSession
from compress_engine.export.tflite import converter_python

RECIPE = (
    "steps:\n"
    "  - prune: {method: magnitude, amount: 0.5}\n"
    "evaluate: {latency_runs: 3, warmup: 1, batch_sizes: [4]}\n"
)


@pytest.fixture(scope="module")
def run(trained_cnn_path: Path, pattern_npz: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bundle") / "out"
    recipe = out.parent / "recipe.yaml"
    recipe.write_text(RECIPE)
    argv = ["compress", str(trained_cnn_path), "--recipe", str(recipe), "--data", str(pattern_npz)]
    assert main([*argv, "--out", str(out), "--bundle", "-q"]) == 0
    return out


def test_it_holds_every_artifact_the_report_and_the_preprocessing(run: Path) -> None:
    report = Report.model_validate_json((run / "report.json").read_text())
    with zipfile.ZipFile(run / "bundle.zip") as zf:
        names = set(zf.namelist())
        assert {f"models/{a.name}" for a in report.artifacts} <= names
        assert {"model.sparse.onnx", "model.sparse.onnx.zip"} == {a.name for a in report.artifacts}
        for artifact in report.artifacts:
            assert zf.read(f"models/{artifact.name}") == (run / artifact.name).read_bytes()
        markdown = zf.read("REPORT.md").decode()
        spec = zf.read("preprocessing.json").decode()
    assert "| Latency p50, batch 4 |" in markdown
    assert "## Latency by runtime" in markdown
    cpu = next(r for r in report.runtimes if r.runtime == "CPU")
    assert f"| CPU | {cpu.original.p50_ms:.4g} ms | {cpu.compressed.p50_ms:.4g} ms |" in markdown
    assert all(f"| {r.runtime} |" in markdown for r in report.runtimes)
    assert "## Pruning" in markdown and "magnitude pruning" in markdown
    assert "Top-1 on" in markdown  # the dataset has labels
    assert '"layout": "NCHW"' in spec and '"dtype": "float32"' in spec


def test_its_example_runs_the_bundled_model(run: Path, pattern_npz: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(run / "bundle.zip") as zf:
        zf.extractall(tmp_path)

    random = _example(tmp_path)
    with_data = _example(tmp_path, "--npz", str(pattern_npz))

    assert "logits: shape [1, 10]" in random
    assert "logits: shape [600, 10]" in with_data and "top-1 per sample: [" in with_data


def test_it_streams_in_pieces_that_add_up_to_a_valid_zip(run: Path) -> None:
    report = Report.model_validate_json((run / "report.json").read_text())
    artifacts = [(a.name, lambda p=run / a.name: p.open("rb")) for a in report.artifacts]

    chunks = list(iter_bundle(report, artifacts))

    assert len(chunks) > 3 and all(chunks)  # several writes, no empty ones
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None


# --- A run that exported TFLite files too: fp32, and full-integer with int8 inputs.

TFLITE_RECIPE = {
    "steps": [{"quantize": {"mode": "static-int8"}}],
    "export": ["onnx", "tflite"],
    "tflite": {"precisions": ["fp32", "int8"], "int8_io": True, "representative_samples": 100},
    "evaluate": {"latency_runs": 5, "warmup": 1, "fidelity_samples": 8, "batch_sizes": []},
}
TEACHER_SAMPLES = 1000


@pytest.fixture(scope="module")
def tflite_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path, Path]:
    """(report, output folder, a 40-sample npz of evaluation inputs named x)."""
    if converter_python() is None:
        pytest.fail("the TFLite converter environment is missing: run `make install`")
    root = tmp_path_factory.mktemp("tflite")
    x, y = model_builders.digits_dataset()
    teacher = model_builders.export_digits_teacher(
        root / "teacher.onnx", x[:TEACHER_SAMPLES], y[:TEACHER_SAMPLES]
    )
    np.savez(root / "digits.npz", x=x[TEACHER_SAMPLES:], y=y[TEACHER_SAMPLES:])
    np.savez(root / "sample.npz", x=x[TEACHER_SAMPLES : TEACHER_SAMPLES + 40])
    report = compress(teacher, TFLITE_RECIPE, root / "digits.npz", out_dir=root / "out")
    assert [a.status for a in report.artifacts] == ["ok"] * 3, report.artifacts
    return report, root / "out", root / "sample.npz"


@pytest.fixture(scope="module")
def tflite_bundle(
    tflite_run: tuple[Report, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The bundle of tflite_run, unzipped."""
    report, out, _ = tflite_run
    return _unzipped(report, out, tmp_path_factory.mktemp("tflite-bundle"))


def test_it_holds_every_file_charts_and_a_row_per_artifact(
    tflite_run: tuple[Report, Path, Path], tflite_bundle: Path
) -> None:
    report, out, _ = tflite_run
    markdown = (tflite_bundle / "REPORT.md").read_text()

    assert {p.name for p in (tflite_bundle / "models").iterdir()} == {
        "model.int8.onnx",
        "model.fp32.tflite",
        "model.int8.tflite",
    }
    for a in report.files:
        assert (tflite_bundle / "models" / a.name).read_bytes() == (out / a.name).read_bytes()
        assert f"| [models/{a.name}](models/{a.name}) | {a.format} | {a.precision} |" in markdown
    assert markdown.count("| ok | LiteRT ") == 2 and markdown.count("| ok | ONNX Runtime ") == 1
    for chart in ("size", "latency", "accuracy"):
        assert f"![{chart}](charts/{chart}.png)" in markdown
        with Image.open(tflite_bundle / "charts" / f"{chart}.png") as image:
            image.verify()
            assert image.format == "PNG" and image.size == (600, 300)
    assert "take `input` as NHWC: transpose NCHW arrays with `x.transpose(0, 2, 3, 1)`" in markdown
    assert "`model.int8.tflite` takes `input` as int8" in markdown
    readme = (tflite_bundle / "README.md").read_text()
    assert "pip install ai-edge-litert numpy" in readme and "examples/run_tflite.py" in readme


def test_its_preprocessing_gives_each_files_layout_and_input_dtypes(tflite_bundle: Path) -> None:
    spec = json.loads((tflite_bundle / "preprocessing.json").read_text())

    assert spec["model"] == "models/model.int8.onnx"
    assert spec["tflite_model"] == "models/model.fp32.tflite"
    assert spec["artifacts"]["model.int8.onnx"]["layouts"] == {}
    assert spec["artifacts"]["model.int8.tflite"] == {
        "format": "tflite",
        "precision": "int8",
        "layouts": {"input": "NHWC"},
        "input_dtypes": {"input": "int8"},
        "input_shapes": {"input": [1, 1, 8, 8]},  # fixed at conversion, batch 1
    }


def test_its_onnx_example_gives_onnx_runtimes_top1(
    tflite_run: tuple[Report, Path, Path], tflite_bundle: Path
) -> None:
    import onnxruntime as ort

    _, out, sample = tflite_run
    x = np.load(sample)["x"]
    session = ort.InferenceSession(str(out / "model.int8.onnx"))
    want = session.run(None, {"input": x})[0].argmax(axis=1).tolist()

    assert _top1(_example(tflite_bundle, "--npz", str(sample))) == want
    assert "logits: shape [1, 10]" in _example(tflite_bundle)


@pytest.mark.parametrize("name", ["model.fp32.tflite", "model.int8.tflite"])
def test_its_tflite_example_gives_litert_top1(
    name: str, tflite_run: tuple[Report, Path, Path], tflite_bundle: Path
) -> None:
    report, out, sample = tflite_run
    x = np.load(sample)["x"]
    # The engine's own LiteRT reader, the one whose figures the report shows.
    session = LiteRTSession(
        out / name,
        input_names=["input"],
        onnx_outputs={"logits": [None, 10]},
        layouts=next(a.layouts for a in report.files if a.name == name),
        threads=1,
    )
    want = session.run(None, {"input": x})[0].argmax(axis=1).tolist()
    # The default model is the first TFLite file; the other one is picked with --model.
    pick = [] if name == "model.fp32.tflite" else ["--model", f"models/{name}"]

    with_data = _example(tflite_bundle, *pick, "--npz", str(sample), script=TFLITE)
    random = _example(tflite_bundle, *pick, script=TFLITE)

    assert "logits: shape [40, 10]" in with_data and _top1(with_data) == want
    assert len(set(want)) > 3  # real predictions, not one class for everything
    assert "logits: shape [1, 10]" in random and len(_top1(random)) == 1


def test_a_failed_export_is_listed_with_its_reason_and_left_out(
    tflite_run: tuple[Report, Path, Path], tmp_path: Path
) -> None:
    report, out, _ = tflite_run
    reason = "converter crashed | exit 1"
    failed = report.model_copy(
        update={
            "artifacts": [
                a.model_copy(update={"status": "failed", "failure": reason})
                if a.name == "model.int8.tflite"
                else a
                for a in report.artifacts
            ]
        }
    )

    folder = _unzipped(failed, out, tmp_path)

    markdown = (folder / "REPORT.md").read_text()
    assert "| model.int8.tflite | tflite | int8 | - | failed: converter crashed \\| exit 1 |" in (
        markdown
    )
    assert "models/model.int8.tflite" not in markdown
    assert "int8 inputs" not in markdown  # only the failed file took int8 inputs
    assert "- `model.int8.tflite`: converter crashed | exit 1" in (folder / "README.md").read_text()
    assert not (folder / "models" / "model.int8.tflite").exists()
    spec = json.loads((folder / "preprocessing.json").read_text())
    assert list(spec["artifacts"]) == ["model.int8.onnx", "model.fp32.tflite"]


def test_its_charts_are_reproducible_and_show_cosine_without_labels(
    tflite_run: tuple[Report, Path, Path],
) -> None:
    report, _, _ = tflite_run
    unlabelled = report.model_copy(update={"accuracy": None})

    assert bundle_binaries(report) == bundle_binaries(report)
    assert set(bundle_binaries(unlabelled)) == {
        "charts/size.png",
        "charts/latency.png",
        "charts/cosine.png",
    }
    assert "![cosine](charts/cosine.png)" in bundle_texts(unlabelled)["REPORT.md"]


ONNX, TFLITE = "examples/run_onnx.py", "examples/run_tflite.py"


def _unzipped(report: Report, out: Path, folder: Path) -> Path:
    with (folder / "bundle.zip").open("wb") as target:
        write_bundle(
            target, report, [(a.name, lambda p=out / a.name: p.open("rb")) for a in report.files]
        )
    with zipfile.ZipFile(folder / "bundle.zip") as zf:
        zf.extractall(folder / "bundle")
    return folder / "bundle"


def _top1(stdout: str) -> list[int]:
    (found,) = re.findall(r"top-1 per sample: (\[.*\])", stdout)
    return ast.literal_eval(found)


def _example(folder: Path, *args: str, script: str = ONNX) -> str:
    done = subprocess.run(
        [sys.executable, script, *args], cwd=folder, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
