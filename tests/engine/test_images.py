"""Image-folder (.zip) datasets: decoding, layout, normalisation, errors, end to end."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compress_engine import EngineError, compress
from compress_engine.data import load_dataset
from compress_engine.inspect import TensorInfo

NCHW_GRAY = TensorInfo(name="input", dtype="float32", shape=["batch", 1, 8, 8])
NHWC_RGB = TensorInfo(name="image", dtype="float32", shape=["batch", 4, 6, 3])


def _png(color, size=(16, 16), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def test_it_reads_class_folders_into_labelled_nchw_samples(tmp_path: Path) -> None:
    path = _zip(
        tmp_path / "d.zip",
        {
            "data/dogs/1.png": _png((255, 255, 255)),
            "data/cats/1.png": _png((0, 0, 0)),
            "data/cats/2.jpg": _png((0, 0, 0)),  # a PNG under a .jpg name still decodes
            "data/__MACOSX/._junk.png": b"resource fork",
            "data/README.txt": b"not an image",
        },
    )
    dataset = load_dataset(path, [NCHW_GRAY])

    x = dataset.inputs["input"]
    assert x.shape == (3, 1, 8, 8) and x.dtype == np.float32
    assert dataset.classes == ("cats", "dogs")
    # Sorted by path: cats/1, cats/2, dogs/1.
    assert dataset.labels.tolist() == [0, 0, 1]
    assert x[0].max() == 0.0 and x[2].min() == 1.0
    assert "3 images in 2 class folders; grayscale, resized to 8x8" in dataset.description


def test_it_normalises_per_channel_and_keeps_nhwc(tmp_path: Path) -> None:
    path = _zip(tmp_path / "d.zip", {"a/1.png": _png((255, 0, 51))})
    dataset = load_dataset(path, [NHWC_RGB], image_mean=[0.5, 0.5, 0.2], image_std=[0.5, 0.25, 0.1])
    x = dataset.inputs["image"]
    assert x.shape == (1, 4, 6, 3)
    # (255/255 - 0.5)/0.5 = 1, (0 - 0.5)/0.25 = -2, (51/255 - 0.2)/0.1 = 0
    np.testing.assert_allclose(x[0, 0, 0], [1.0, -2.0, 0.0], atol=1e-6)
    assert "NHWC" in dataset.description


@pytest.mark.parametrize(
    ("files", "inputs", "message"),
    [
        ({"1.png": _png((1, 2, 3))}, [NCHW_GRAY], "not inside a class folder"),
        ({"a/1.png": b"\x89PNG broken"}, [NCHW_GRAY], "'a/1.png' could not be read"),
        ({"a/notes.txt": b"hi"}, [NCHW_GRAY], "holds no images"),
        (
            {"a/1.png": _png((1, 2, 3))},
            [TensorInfo(name="tokens", dtype="int64", shape=["batch", 16])],
            "needs a 4-D image input",
        ),
    ],
)
def test_it_explains_what_is_wrong(tmp_path: Path, files, inputs, message) -> None:
    path = _zip(tmp_path / "d.zip", files)
    with pytest.raises(EngineError, match=message):
        load_dataset(path, inputs)


def test_it_refuses_a_mean_with_the_wrong_number_of_channels(tmp_path: Path) -> None:
    path = _zip(tmp_path / "d.zip", {"a/1.png": _png((1, 2, 3))})
    with pytest.raises(EngineError, match="image_mean has 2 values; give 1 or 3"):
        load_dataset(path, [NHWC_RGB], image_mean=[0.1, 0.2])


def test_compress_calibrates_and_scores_on_an_image_folder(
    trained_cnn_path: Path, tmp_path: Path
) -> None:
    from model_builders import pattern_dataset

    # The trained CNN's patterns as 8-bit grayscale images, one folder per class.
    x, y = pattern_dataset(120, seed=3)
    lo, hi = x.min(), x.max()
    files = {}
    for i, (sample, label) in enumerate(zip(x, y, strict=True)):
        pixels = np.round((sample[0] - lo) / (hi - lo) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        files[f"digits/class{label:02d}/{i:03d}.png"] = buffer.getvalue()
    path = _zip(tmp_path / "images.zip", files)
    # Undo the 8-bit scaling so pixels land back in the model's input range.
    scale = float(hi - lo)
    recipe = {
        "version": 1,
        "steps": [{"quantize": {"mode": "static-int8", "samples": 32}}],
        "evaluate": {
            "latency_runs": 3,
            "warmup": 1,
            "batch_sizes": [],
            "image_mean": [float(-lo / scale)],
            "image_std": [float(1 / scale)],
        },
    }

    report = compress(trained_cnn_path, recipe, data=path, out_dir=tmp_path / "out")

    assert report.data is not None and report.data.samples == 120
    assert report.data.classes == sorted({f"class{label:02d}" for label in y.tolist()})
    assert "grayscale, resized to 8x8" in report.data.preprocessing
    assert report.accuracy is not None and report.accuracy.samples == 60
    # Class folder order equals the label order here, so the trained CNN scores well.
    assert report.accuracy.original_top1 > 0.5
