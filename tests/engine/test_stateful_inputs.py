"""Stateful multi-input models: per-input sample axes and constants in datasets (the `.npz`
manifest and evaluate.sample_axis / evaluate.constants), and random inputs that respect
scalars and a batch dim that is not first (issue 16, item 5)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import third_party_models as tpm
from compress_engine import EngineError, compress
from compress_engine.configs import EvaluateConfig
from compress_engine.data import MANIFEST, as_dataset, load_dataset
from compress_engine.dataset_info import inspect_dataset
from compress_engine.inspect import ModelInfo, TensorInfo
from compress_engine.measure.inputs import (
    fidelity_batches,
    random_feed,
    resolve_shapes,
    shapes_at,
)
from compress_engine.pipeline.splits import DataSplits
from compress_engine.presets import get_preset

STREAMING = [
    TensorInfo(name="input", dtype="float32", shape=["batch", 512]),
    TensorInfo(name="state", dtype="float32", shape=[2, "batch", 128]),
    TensorInfo(name="sr", dtype="int64", shape=[]),
]
STATE_ON_AXIS_1 = json.dumps({"sample_axis": {"state": 1}})


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tpm.stateful_streaming_model(tmp_path_factory.mktemp("streaming"))


@pytest.fixture(scope="module")
def manifest_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "stream.npz"
    np.savez(path, **tpm.streaming_feed(24, seed=3), **{MANIFEST: STATE_ON_AXIS_1})
    return path


def _model_info(inputs: list[TensorInfo]) -> ModelInfo:
    return ModelInfo(
        ir_version=7, opset=12, producer="test", inputs=inputs, outputs=[], parameters=0,
        nodes=0, op_types={},
    )  # fmt: skip


def _shapes(feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {n: a.shape for n, a in feed.items()}


# --- the dataset format ---------------------------------------------------------------------


def test_a_manifest_batches_state_on_axis_1_and_feeds_scalars_as_they_are(
    manifest_npz: Path,
) -> None:
    with np.load(manifest_npz, allow_pickle=False) as npz:  # never needs unpickling
        assert json.loads(str(npz[MANIFEST])) == {"sample_axis": {"state": 1}}

    dataset = load_dataset(manifest_npz, STREAMING)

    assert dataset.samples == 24 and dataset.constants == ["sr"]
    feed, _ = next(dataset.batches(5))
    assert _shapes(feed) == {"input": (5, 512), "state": (2, 5, 128), "sr": ()}
    assert feed["state"].flags.c_contiguous and int(feed["sr"]) == tpm.SAMPLE_RATE
    # A shuffled split keeps each sample's frame and state together.
    original = tpm.streaming_feed(24, seed=3)
    part = dataset.split(0.5, seed=1)[0]
    row = int(np.flatnonzero((original["input"] == part.inputs["input"][0]).all(axis=1))[0])
    np.testing.assert_array_equal(part.inputs["state"][:, 0], original["state"][:, row])


def test_samples_stored_first_move_to_the_models_batch_axis(tmp_path: Path) -> None:
    feed = tpm.streaming_feed(6)
    path = tmp_path / "first.npz"
    np.savez(path, input=feed["input"], state=feed["state"].transpose(1, 0, 2), sr=feed["sr"])

    dataset = load_dataset(path, STREAMING)

    np.testing.assert_array_equal(dataset.inputs["state"], feed["state"])
    assert _shapes(next(dataset.batches(4))[0])["state"] == (2, 4, 128)


def test_the_recipe_names_sample_axes_and_constants_the_dataset_lacks(tmp_path: Path) -> None:
    feed = tpm.streaming_feed(8)
    path = tmp_path / "no-sr.npz"
    np.savez(path, input=feed["input"], state=feed["state"])
    ev = EvaluateConfig(sample_axis={"state": 1}, constants={"sr": 8000})

    dataset = as_dataset(path, sample_axis=ev.sample_axis, constants=ev.constants)
    splits = DataSplits(dataset, _model_info(STREAMING), ev)

    feed_out, _ = next(splits.calibration.batches(3))
    assert _shapes(feed_out) == {"input": (3, 512), "state": (2, 3, 128), "sr": ()}
    assert feed_out["sr"].dtype == np.int64 and int(feed_out["sr"]) == 8000


def test_constants_are_checked_against_the_input_they_feed() -> None:
    feed = tpm.streaming_feed(4)
    arrays = {"input": feed["input"], "state": feed["state"], MANIFEST: STATE_ON_AXIS_1}

    with pytest.raises(EngineError, match=r"constant for input 'sr' has shape \[2\]"):
        as_dataset(arrays, constants={"sr": [1, 2]}).for_model(STREAMING)
    with pytest.raises(EngineError, match="must be a number or a rectangular list"):
        as_dataset(arrays, constants={"sr": [[1], [2, 3]]})
    fed = as_dataset(arrays, constants={"sr": 16000.0}).for_model(STREAMING).inputs["sr"]
    assert fed.dtype == np.int64 and int(fed) == 16000


def test_training_refuses_what_it_cannot_feed_sample_by_sample(manifest_npz: Path) -> None:
    dataset = load_dataset(manifest_npz, STREAMING)

    with pytest.raises(EngineError, match="'state', 'sr' as constants or with samples on"):
        dataset.samples_first(["input", "state", "sr"], "Training")


BAD_MANIFESTS = [
    ({"sample_axis": {"stat": 1}}, "names 'stat', but the dataset's arrays are"),
    ({"sample_axis": {"state": 3}}, "sample axis of 'state' is 3, but the array has 3 dims"),
    ({"constants": ["input"], "sample_axis": {"input": 0}}, "keep one"),
    ({"axes": {"state": 1}}, "unknown keys ['axes']"),
    ({"sample_axis": {"state": "1"}}, "must map array names to axes"),
    ({}, "same number of samples; got {'input': '8 on axis 0', 'state': '2 on axis 0'}"),
    ("not json{", "not valid JSON"),
]


@pytest.mark.parametrize(("manifest", "message"), BAD_MANIFESTS)
def test_bad_manifests_are_explained_at_upload_and_at_load(
    tmp_path: Path, manifest: object, message: str
) -> None:
    path = tmp_path / "bad.npz"
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    np.savez(path, **tpm.streaming_feed(8), **{MANIFEST: text})

    with pytest.raises(EngineError) as at_upload:
        inspect_dataset(path, name="bad.npz", max_bytes=1 << 30)
    with pytest.raises(EngineError) as at_load:
        load_dataset(path, STREAMING)

    assert message in str(at_upload.value) and message in str(at_load.value)


def test_a_manifest_that_is_not_one_string_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "numbers.npz"
    np.savez(path, x=np.zeros((4, 3)), **{MANIFEST: np.zeros(3)})

    with pytest.raises(EngineError, match="must be one string"):
        inspect_dataset(path, name="numbers.npz", max_bytes=1 << 30)


def test_upload_inspection_records_sample_axes_and_constants(manifest_npz: Path) -> None:
    info = inspect_dataset(manifest_npz, name="stream.npz", max_bytes=1 << 30)

    assert info.samples == 24
    assert info.arrays == {
        "input": {"shape": [24, 512], "dtype": "float32"},
        "state": {"shape": [2, 24, 128], "dtype": "float32", "sample_axis": 1},
        "sr": {"shape": [], "dtype": "int64", "constant": True},
    }


# --- random inputs --------------------------------------------------------------------------


def test_random_inputs_share_the_batch_symbol_and_guess_scalars() -> None:
    shapes = resolve_shapes(STREAMING, 1)
    assert shapes == {"input": [1, 512], "state": [2, 1, 128], "sr": []}
    assert shapes_at(STREAMING, shapes, 4) == {"input": [4, 512], "state": [2, 4, 128], "sr": []}
    assert [
        s["state"] for s in fidelity_batches(STREAMING, shapes_at(STREAMING, shapes, 4), 6)
    ] == [
        [2, 4, 128],
        [2, 2, 128],
    ]

    guessed = random_feed(STREAMING, shapes, np.random.default_rng(0))
    given = random_feed(STREAMING, shapes, np.random.default_rng(0), {"sr": 8000})

    assert guessed["sr"].shape == () and guessed["sr"].dtype == np.int64
    assert int(guessed["sr"]) == 16000 and int(given["sr"]) == 8000
    # A batch symbol that never leads an input still names the batch.
    only_state = [TensorInfo(name="h", dtype="float32", shape=[2, "batch_size", 8])]
    assert resolve_shapes(only_state, 3) == {"h": [2, 3, 8]}


@pytest.fixture(scope="module")
def reshaping_scalar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x [batch, 6] reshaped to [batch, sr, -1]: runs only for an `sr` that divides 6."""
    import torch

    class Reshaping(torch.nn.Module):
        def forward(self, x: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
            return x.reshape(x.shape[0], sr, -1).sum(-1)

    path = tmp_path_factory.mktemp("reshaping") / "reshaping.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Reshaping(), (torch.randn(1, 6), torch.tensor(2)), str(path), dynamo=False,
            opset_version=12, input_names=["x", "sr"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
        )  # fmt: skip
    return path


def test_a_scalar_the_model_rejects_is_named_with_the_fix(
    reshaping_scalar: Path, tmp_path: Path
) -> None:
    recipe = {"steps": [{"quantize": {"mode": "dynamic-int8"}}], "evaluate": _FAST}

    with pytest.raises(EngineError) as err:
        compress(reshaping_scalar, recipe, out_dir=tmp_path / "guess")
    assert "'sr' had no value and got a guess (sr=16000)" in str(err.value)
    assert "evaluate.constants" in str(err.value)

    fixed = {**recipe, "evaluate": {**_FAST, "constants": {"sr": 3}}}
    report = compress(reshaping_scalar, fixed, out_dir=tmp_path / "given")
    assert report.fidelity is not None and not any("fixed guess" in n for n in report.notes)


# --- every quantize preset on the stateful model --------------------------------------------

_FAST = {"latency_runs": 3, "warmup": 1, "fidelity_samples": 8, "batch_sizes": [4]}
PRESETS = ["fast-int8", "static-int8", "fp16-gpu", "int4-weights"]


@pytest.mark.parametrize(
    ("preset", "with_data"),
    [(p, d) for p in PRESETS for d in (False, True) if d or not get_preset(p).needs_data],
)
def test_every_quantize_preset_runs_on_the_stateful_model(
    streaming: Path, manifest_npz: Path, tmp_path: Path, preset: str, with_data: bool
) -> None:
    recipe = get_preset(preset).recipe().model_dump(mode="json")
    recipe["evaluate"].update(_FAST)

    report = compress(streaming, recipe, manifest_npz if with_data else None, tmp_path / "out")

    assert report.fidelity is not None and report.fidelity.samples > 0
    assert report.fidelity.inputs == ("evaluation split" if with_data else "random")
    # The batch sits on axis 1 of `state`, so batch 4 runs too instead of being dropped.
    assert not any("does not run at batch 4" in n for n in report.notes)
    if not with_data:
        assert any("fixed guess (sr=16000)" in n for n in report.notes)
    if preset == "static-int8":
        # Calibrated on the manifest dataset's split: state batched on axis 1, sr constant.
        assert report.data is not None and report.data.calibration_samples == 12
        assert report.quantization is not None and report.quantization.quantized_nodes > 0
        # `stateN [2, batch, 128]` is scored per sample along its batch axis, as values
        # (cosine), not as a 2-sample "sequence" whose argmax over hidden units means nothing.
        state = next(o for o in report.fidelity.per_output if o.name == "stateN")
        assert state.kind == "values"
        assert state.per_sample is not None
        assert state.per_sample.samples == report.fidelity.samples
        assert report.recommended, report.quality_reasons
