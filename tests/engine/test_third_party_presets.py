"""Models shaped like third-party ones (tests/third_party_models.py) through the engine.

First the builders' own smoke tests (each model runs in ONNX Runtime at two sizes of its
dynamic dims, and its dataset loads), then a representative set of presets on each structure.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

import third_party_models as tpm
from compress_engine import Report, compress
from compress_engine.errors import EngineError
from compress_engine.ingest import ModelFormat, convert_to_onnx, parse_input_shapes
from compress_engine.presets import get_preset
from compress_engine.report import TrainingPoint


@pytest.fixture(scope="module")
def tp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("third_party")


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _images(*shape: int) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}


def test_classifier_runs_at_two_sizes_and_classifies_digits(tp_dir: Path) -> None:
    path = tpm.se_grouped_classifier(tp_dir)
    assert _run(path, _images(3, 1, 8, 8))[0].shape == (3, 10)
    assert _run(path, _images(2, 1, 16, 12))[0].shape == (2, 10)
    data = np.load(tpm.digits_npz(tp_dir / "digits.npz", 100))
    logits = _run(path, {"input": data["input"]})[0]
    assert (logits.argmax(1) == data["y"]).mean() > 0.85  # trained, on unseen digits


def test_fixed_classifier_has_no_free_dims(tp_dir: Path) -> None:
    path = tpm.se_grouped_classifier(tp_dir, dynamic=False)
    inputs = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()
    assert inputs[0].shape == [1, 1, 8, 8]


def test_sequence_model_runs_at_two_widths(tp_dir: Path) -> None:
    path = tpm.cnn_sequence_model(tp_dir)
    assert _run(path, _images(2, 1, 8, 32))[0].shape == (2, 16, 11)
    assert _run(path, _images(3, 1, 8, 48))[0].shape == (3, 24, 11)
    x, targets = tpm.digit_strips(32, seed=7)
    log_probs = _run(path, {"input": x})[0]
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-4)
    assert (log_probs.argmax(-1) == targets).mean() > 0.8  # per-step agreement


def test_detector_map_is_mostly_zero_and_finds_blobs(tp_dir: Path) -> None:
    path = tpm.dense_map_detector(tp_dir)
    assert _run(path, _images(1, 3, 32, 32))[0].shape == (1, 1, 8, 8)
    assert _run(path, _images(2, 3, 48, 64))[0].shape == (2, 1, 12, 16)
    x, maps = tpm.blob_images(20, seed=7)
    prob = _run(path, {"input": x})[0]
    assert np.median(prob) < 0.05
    found = (prob > 0.5) & (maps > 0)
    assert found.sum() > 0.8 * (maps > 0).sum()


def test_streaming_model_takes_state_batch_second_and_a_scalar_rate(tp_dir: Path) -> None:
    path = tpm.stateful_streaming_model(tp_dir)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {i.name: (i.shape, i.type) for i in session.get_inputs()}
    assert shapes == {
        "input": (["batch", 512], "tensor(float)"),
        "state": ([2, "batch", 128], "tensor(float)"),
        "sr": ([], "tensor(int64)"),
    }
    for batch in (1, 4):
        output, state = session.run(None, tpm.streaming_feed(batch))
        assert output.shape == (batch, 1) and state.shape == (2, batch, 128)
    feed = tpm.streaming_feed(2)
    other_rate = session.run(None, {**feed, "sr": np.array(8000, dtype=np.int64)})[0]
    assert not np.allclose(session.run(None, feed)[0], other_rate)  # sr is a real input
    data = np.load(tpm.streaming_npz(tp_dir / "streaming.npz", 8))
    assert data["state"].shape == (2, 8, 128) and data["sr"].shape == ()


def test_torchscript_takes_an_int_argument(tp_dir: Path) -> None:
    module = torch.jit.load(str(tpm.torchscript_with_int_arg(tp_dir)))
    args = [a.name for a in module.forward.schema.arguments]
    assert args == ["self", "x", "sr"]
    assert str(module.forward.schema.arguments[2].type) == "int"
    x = torch.randn(3, 512)
    assert module(x, 16000).shape == (3, 1)
    assert not torch.allclose(module(x, 16000), module(x, 8000))


@pytest.mark.parametrize(
    ("write", "n"),
    [(tpm.digits_npz, 50), (tpm.digit_strips_npz, 40), (tpm.blobs_npz, 30)],
)
def test_image_datasets_load_for_their_models(tp_dir: Path, write, n: int) -> None:
    from compress_engine.data import load_dataset

    data = load_dataset(write(tp_dir / f"{write.__name__}.npz", n))
    assert data.samples == n and set(data.inputs) == {"input"}


# --- presets on every structure ------------------------------------------------------------
#
# Each cell must end "ok" (a report, recommended or not), or be refused with an EngineError
# whose message says what is wrong before any training starts: never another exception (an
# internal error). The full matrix, every preset on every model with timings and agreements,
# is benchmarks/third_party_matrix.py (run by hand); these are the fast cells, plus one
# torch-side preset on the classifier with its training cut to two epochs.

FAST = {"latency_runs": 12, "warmup": 1, "fidelity_samples": 16}
SHORT_TRAINING = {"epochs": 2, "patience": None}

MODELS = {
    "classifier": (tpm.se_grouped_classifier, lambda d: tpm.digits_npz(d / "digits.npz", 300)),
    "classifier-fixed": (
        lambda d: tpm.se_grouped_classifier(d, dynamic=False),
        lambda d: tpm.digits_npz(d / "digits.npz", 300),
    ),
    "sequence": (tpm.cnn_sequence_model, lambda d: tpm.digit_strips_npz(d / "strips.npz", 64)),
    "dense-map": (tpm.dense_map_detector, lambda d: tpm.blobs_npz(d / "blobs.npz", 48)),
    "stateful": (
        tpm.stateful_streaming_model,
        lambda d: tpm.streaming_npz(d / "streaming.npz", 64),
    ),
}
CELLS = [
    ("classifier", "fast-int8"),
    ("classifier", "static-int8"),
    ("classifier", "auto"),
    ("classifier", "prune-distill"),
    ("classifier-fixed", "static-int8"),
    ("classifier-fixed", "prune-distill"),
    ("sequence", "static-int8"),
    ("sequence", "accuracy-aware-int8"),
    ("sequence", "auto"),
    ("dense-map", "static-int8"),
    ("dense-map", "fp16-gpu"),
    ("stateful", "fast-int8"),
    ("stateful", "static-int8"),
    ("stateful", "auto"),
    ("stateful", "prune-distill"),
]


def preset_recipe(name: str) -> dict[str, Any]:
    """The preset's recipe as a user gets it, with fast timing and training cut short."""
    recipe = get_preset(name).recipe().model_dump(mode="json", exclude_unset=True)
    for step in recipe["steps"]:
        for kind in ("distill", "finetune"):
            if kind in step:
                step[kind].update(SHORT_TRAINING)
        if "quantize" in step and step["quantize"].get("accuracy_aware"):
            step["quantize"]["max_trials"] = 2
    recipe["evaluate"] = {**recipe.get("evaluate", {}), **FAST}
    return recipe


@pytest.fixture(scope="module")
def built(tp_dir: Path) -> Callable[[str], tuple[Path, Path]]:
    cache: dict[str, tuple[Path, Path]] = {}

    def build(name: str) -> tuple[Path, Path]:
        if name not in cache:
            folder = tp_dir / name
            make_model, make_data = MODELS[name]
            cache[name] = (make_model(folder), make_data(folder))
        return cache[name]

    return build


def run_cell(model: Path, data: Path | None, recipe: Any, out: Path) -> Report | EngineError:
    """The report, or the EngineError that refused the run; any other exception fails the
    test with its traceback, and so does a refusal after training started."""
    epochs: list[TrainingPoint] = []
    try:
        return compress(model, recipe, data, out_dir=out, on_training=epochs.append)
    except EngineError as exc:
        message = str(exc)
        assert len(message) > 20 and "Traceback" not in message, message
        assert not epochs, f"refused after {len(epochs)} epochs of training: {message}"
        return exc


@pytest.mark.parametrize(("model", "preset"), CELLS, ids=[f"{m}-{p}" for m, p in CELLS])
def test_preset_runs_or_is_refused_clearly(
    model: str, preset: str, built: Callable[[str], tuple[Path, Path]], tmp_path: Path
) -> None:
    model_path, data = built(model)
    feed = data if get_preset(preset).needs_data else None
    hashes = {p: _sha256(p) for p in (model_path, data)}
    outcome = run_cell(model_path, feed, preset_recipe(preset), tmp_path / "out")
    assert {p: _sha256(p) for p in hashes} == hashes, "an input file was modified"
    if isinstance(outcome, EngineError):
        assert not (tmp_path / "out" / "report.json").exists()
        return
    assert (tmp_path / "out" / "report.json").is_file()
    assert outcome.files, "a report with nothing to download"
    if outcome.fidelity.inputs != "random":
        # On random inputs a detector marks nothing, so map agreement may be undefined.
        for output in outcome.fidelity.per_output:
            assert output.agreement is not None, f"no agreement for output {output.name!r}"


def test_fp16_of_a_recurrent_model_does_not_crash_the_process(
    built: Callable[[str], tuple[Path, Path]], tmp_path: Path, engine_env: dict[str, str]
) -> None:
    """fp16 of the GRU recogniser once crashed ONNX Runtime (a segfault creating the session),
    which takes a worker down with it: run it in a child process, so a crash fails only this
    test, and require a report or an EngineError."""
    model, _ = built("sequence")
    recipe = json.dumps(preset_recipe("fp16-gpu"))
    script = (
        "import json, sys\n"
        "from compress_engine import compress\n"
        "from compress_engine.errors import EngineError\n"
        "try:\n"
        "    compress(sys.argv[1], json.loads(sys.argv[2]), None, out_dir=sys.argv[3])\n"
        "except EngineError as exc:\n"
        "    print('refused:', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", script, str(model), recipe, str(tmp_path)],
        capture_output=True,
        text=True,
        env=engine_env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"


def test_torchscript_with_an_int_argument_converts_and_compresses(
    tp_dir: Path, tmp_path: Path
) -> None:
    """The `int` argument is given a value among the input shapes (as the upload form and the
    CLI take it); it becomes a scalar int64 input, fed as a constant."""
    source = tpm.torchscript_with_int_arg(tp_dir)
    digest = _sha256(source)
    converted = convert_to_onnx(
        source,
        ModelFormat.TORCHSCRIPT,
        tmp_path / "converted",
        input_shapes=parse_input_shapes("x: 1x512; sr: 16000"),
    )
    assert _sha256(source) == digest
    inputs = {t.name: (t.dtype, list(t.shape)) for t in converted.info.inputs}
    assert inputs["sr"] == ("int64", [])
    frames = np.random.default_rng(0).standard_normal((32, 512)).astype(np.float32)
    np.savez(tmp_path / "frames.npz", x=frames, sr=np.array(16000, dtype=np.int64))
    outcome = run_cell(
        converted.model, tmp_path / "frames.npz", preset_recipe("static-int8"), tmp_path / "out"
    )
    assert isinstance(outcome, Report), outcome


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
