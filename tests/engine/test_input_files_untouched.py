"""The user's files are read, never written: every preset through the CLI, and a TFLite export
from the original model (onnx2tf rewrites the file it converts in place), leave the model,
its external data file and the dataset byte for byte as they were, and put nothing beside
them. The worker's half is tests/worker/test_input_files_untouched.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

import model_builders
import third_party_models as tpm
from compress_engine import Report
from compress_engine.cli import main
from compress_engine.export.tflite import converter_python

FAST = {"latency_runs": 5, "warmup": 1, "fidelity_samples": 8, "batch_sizes": []}


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def user_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A user's folder: an opset-12 classifier with dynamic dims whose weights live in an
    external data file, and its dataset."""
    folder = tmp_path_factory.mktemp("user")
    built = tpm.se_grouped_classifier(tmp_path_factory.mktemp("build"), opset=12)
    model = model_builders.save_with_external_data(built, folder / "classifier.onnx")
    data = tpm.digits_npz(folder / "digits.npz", n=120)
    return model, data


def compress_cli(model: Path, data: Path, out: Path, *how: str) -> Report:
    code = main(["compress", str(model), *how, "--data", str(data), "--out", str(out), "-q"])
    assert code == 0
    return Report.model_validate_json((out / "report.json").read_text())


@pytest.mark.parametrize(
    "preset", ["fast-int8", "static-int8", "auto", "accuracy-aware-int8", "mobile-tflite-int8"]
)
def test_a_preset_leaves_the_users_files_as_they_were(
    user_files: tuple[Path, Path], tmp_path: Path, preset: str
) -> None:
    model, data = user_files
    before = fingerprint(model.parent)
    assert set(before) == {"classifier.onnx", "classifier.onnx.data", "digits.npz"}

    report = compress_cli(model, data, tmp_path / "out", "--preset", preset)

    assert report.artifacts  # the run did its work ...
    assert fingerprint(model.parent) == before  # ... on copies of the user's files


def test_a_tflite_export_of_the_original_leaves_it_as_it_was(
    user_files: tuple[Path, Path], tmp_path: Path
) -> None:
    # The case the issue met: with no torch-side step the converter's source is the original
    # model itself, and onnx2tf simplifies and renames the file it is given in place.
    if converter_python() is None:
        pytest.fail("the TFLite converter environment is missing: run `make install`")
    model, data = user_files
    before = fingerprint(model.parent)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "steps": [{"quantize": {"mode": "dynamic-int8"}}],
                "export": ["onnx", "tflite"],
                "tflite": {"precisions": ["fp32"], "converters": ["onnx2tf"]},
                "evaluate": FAST,
            }
        )
    )

    report = compress_cli(model, data, tmp_path / "out", "--recipe", str(recipe))

    assert fingerprint(model.parent) == before
    (fp32,) = [a for a in report.artifacts if a.format == "tflite"]
    assert fp32.status == "ok", fp32.failure
    assert fp32.source == "the original model (float32)"
