from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from compress_engine import EngineError
from compress_engine.data import Dataset, as_dataset, load_dataset, split_sizes
from compress_engine.inspect import TensorInfo

IMAGE = TensorInfo(name="input", dtype="float32", shape=["batch", 1, 8, 8])


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_it_loads_x_and_labels_and_binds_x_to_the_only_input(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((10, 1, 8, 8))  # float64 on purpose
    path = _npz(tmp_path / "d.npz", x=x, y=np.arange(10) % 3)

    data = load_dataset(path, [IMAGE])

    assert list(data.inputs) == ["input"]
    assert data.inputs["input"].dtype == np.float32  # float64 cast to what the model wants
    assert data.labels is not None and data.labels.dtype == np.int64
    assert data.samples == 10


def test_labels_may_be_called_labels(tmp_path: Path) -> None:
    path = _npz(tmp_path / "d.npz", input=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4))

    with pytest.raises(EngineError, match="1-D integer array of class ids"):
        load_dataset(path)

    path = _npz(
        tmp_path / "d.npz", input=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4, int)
    )
    assert load_dataset(path, [IMAGE]).labels is not None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a": np.zeros((2, 1, 8, 8))}, "the dataset has arrays ['a'] but the model's inputs are"),
        ({"x": np.zeros((2, 8, 8))}, "has shape [2, 8, 8] (3 dims), but the input has 4 dims"),
        ({"x": np.zeros((2, 1, 9, 8))}, "fixes dim 2 at 8"),
        ({"x": np.zeros((2, 1, 8, 8), np.int32)}, "has dtype int32, but the model wants float32"),
        ({"x": np.zeros((2, 1, 8, 8)), "y": np.zeros(3, int)}, "same number of samples"),
        ({"y": np.zeros(3, int)}, "holds labels but no inputs"),
        ({"x": np.zeros((0, 1, 8, 8))}, "has no samples"),
        ({"x": np.zeros((2, 1, 8, 8)), "y": -np.ones(2, int)}, "class ids >= 0"),
        (
            {"x": np.zeros((2, 1, 8, 8)), "y": np.zeros(2, int), "labels": np.zeros(2, int)},
            "keep one",
        ),
        ({"x": np.array(["a", "b"])}, "only numbers and booleans"),
    ],
)
def test_it_explains_unusable_datasets(tmp_path: Path, arrays: dict, message: str) -> None:
    path = _npz(tmp_path / "d.npz", **arrays)

    with pytest.raises(EngineError) as err:
        load_dataset(path, [IMAGE])

    assert message.lower() in str(err.value).lower()


def test_it_never_unpickles(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    objects = np.array([{"a": 1}, None], dtype=object)
    np.savez(path, x=objects)  # stored as a pickle inside the .npy

    with pytest.raises(EngineError, match="never does"):
        load_dataset(path)


@pytest.mark.parametrize("kind", ["pickle", "text", "zip", "missing", "not-npy"])
def test_it_refuses_files_that_are_not_npz(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "d.npz"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"x": [1, 2]}))
        expected = "not a NumPy .npz"
    elif kind == "text":
        path.write_text("x,y\n1,2\n")
        expected = "not a NumPy .npz"
    elif kind == "zip":
        path = tmp_path / "images.zip"
        path.write_bytes(b"PK")
        expected = "read against the model.s input shape"
    elif kind == "not-npy":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.txt", "hello")
        expected = "not a .npy array"
    else:
        expected = "does not exist"

    with pytest.raises(EngineError, match=expected):
        load_dataset(path)


def test_split_is_seeded_disjoint_and_complete() -> None:
    data = Dataset({"x": np.arange(100, dtype=np.float32)[:, None]}, np.arange(100))

    cal, ev = data.split(0.3, seed=1)
    cal2, _ = data.split(0.3, seed=1)
    cal3, _ = data.split(0.3, seed=2)

    assert (cal.samples, ev.samples) == (30, 70)
    assert np.array_equal(cal.inputs["x"], cal2.inputs["x"])
    assert not np.array_equal(cal.inputs["x"], cal3.inputs["x"])
    together = np.sort(np.concatenate([cal.labels, ev.labels]))  # type: ignore[list-item]
    assert np.array_equal(together, np.arange(100))
    # labels travel with their samples
    assert np.array_equal(cal.inputs["x"][:, 0].astype(int), cal.labels)


def test_a_tiny_dataset_still_gets_both_splits() -> None:
    data = Dataset({"x": np.zeros((2, 3), np.float32)})

    cal, ev = data.split(0.01, seed=0)

    assert (cal.samples, ev.samples) == (1, 1)


def test_three_way_split_keeps_the_calibration_part_of_the_two_way_one() -> None:
    data = Dataset({"x": np.arange(100, dtype=np.float32)[:, None]}, np.arange(100))

    cal, train, ev = data.split(0.3, 0.5, seed=4)
    cal2, _ = data.split(0.3, seed=4)

    assert (cal.samples, train.samples, ev.samples) == (30, 50, 20)
    assert np.array_equal(cal.labels, cal2.labels)  # type: ignore[arg-type]
    parts = [cal.labels, train.labels, ev.labels]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("samples", "fractions", "sizes"),
    [
        (100, (0.5,), [50, 50]),
        (2, (0.01,), [1, 1]),
        (2, (0.99,), [1, 1]),
        (1, (0.6,), [1, 0]),
        (10, (0.0,), [0, 10]),
        (10, (1.0,), [10, 0]),
        (3, (0.01, 0.01), [1, 1, 1]),
        (3, (0.9, 0.05), [1, 1, 1]),
        (10, (0.3, 0.0), [3, 0, 7]),
        (10, (0.0, 0.3), [0, 3, 7]),
        (2, (0.4, 0.4), [0, 1, 1]),
    ],
)
def test_split_sizes_give_each_wanted_part_a_sample_later_parts_first(
    samples: int, fractions: tuple[float, ...], sizes: list[int]
) -> None:
    assert split_sizes(samples, fractions) == sizes
    assert sum(sizes) == samples


def test_split_sizes_refuse_fractions_over_one() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        split_sizes(10, (0.6, 0.6))


def test_batches_cover_every_sample_or_drop_the_partial_last() -> None:
    data = Dataset({"x": np.zeros((10, 3), np.float32)}, np.zeros(10, np.int64))

    sizes = [feed["x"].shape[0] for feed, _ in data.batches(4)]
    fixed = [feed["x"].shape[0] for feed, _ in data.batches(4, drop_last=True)]

    assert sizes == [4, 4, 2]
    assert fixed == [4, 4]


def test_as_dataset_accepts_mappings() -> None:
    data = as_dataset({"x": np.zeros((3, 2)), "y": np.array([0, 1, 2])})

    assert data.samples == 3 and data.labels is not None
