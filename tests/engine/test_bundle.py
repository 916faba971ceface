"""The deployment bundle: what it holds, and that its example runs the bundled model."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from compress_engine import Report
from compress_engine.bundle import iter_bundle
from compress_engine.cli import main

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


def _example(folder: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "examples/run_onnx.py", *args], cwd=folder, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
