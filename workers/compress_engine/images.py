"""Image-folder datasets: a `.zip` with one folder per class (`cats/001.png`, ...).

Images are decoded with Pillow (never anything executable), bounded in count and pixels,
converted to the model's channel count, resized to its fixed height and width, scaled to
[0, 1], normalised with the recipe's mean/std, and laid out as the model's input expects
(NCHW or NHWC, read off its shape). Class ids follow the sorted folder names.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.data import Dataset
from compress_engine.errors import EngineError, short_message
from compress_engine.tensors import TensorInfo

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"})
MAX_IMAGES = 100_000
# Per image, checked from the header before decoding (decompression bombs).
MAX_IMAGE_PIXELS = 40_000_000


@dataclass(frozen=True)
class ImageLayout:
    channels: int
    height: int
    width: int
    channels_first: bool

    def describe(self) -> str:
        return "NCHW" if self.channels_first else "NHWC"


def image_layout(tensor: TensorInfo) -> ImageLayout:
    """Channels, size and layout of a 4-D image input with fixed height and width."""
    shape = tensor.shape
    fixed = len(shape) == 4 and all(isinstance(d, int) for d in shape[1:])
    if fixed and shape[1] in (1, 3):
        return ImageLayout(int(shape[1]), int(shape[2]), int(shape[3]), channels_first=True)
    if fixed and shape[3] in (1, 3):
        return ImageLayout(int(shape[3]), int(shape[1]), int(shape[2]), channels_first=False)
    raise EngineError(
        f"The model input {tensor.name!r} has shape {shape}: an image-folder dataset needs a "
        "4-D image input [N, C, H, W] or [N, H, W, C] with 1 or 3 channels and a fixed height "
        "and width. Use a .npz dataset for other inputs."
    )


def load_image_folder(
    path: Path, inputs: Sequence[TensorInfo], *, mean: Sequence[float], std: Sequence[float]
) -> Dataset:
    if len(inputs) != 1:
        raise EngineError(
            f"An image-folder dataset feeds a one-input model; this one has {len(inputs)} "
            "inputs. Use a .npz dataset with an array per input."
        )
    layout = image_layout(inputs[0])
    mean_arr, std_arr = _normaliser(mean, std, layout.channels)
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise EngineError(f"The dataset is not a readable .zip archive: {exc}") from None
    with archive:
        entries = image_entries(archive.infolist())
        classes = sorted({folder for folder, _ in entries})
        index = {name: i for i, name in enumerate(classes)}
        pixels = np.stack([_decode(archive, member, layout) for _, member in entries])
        labels = np.array([index[folder] for folder, _ in entries], dtype=np.int64)
    x = (pixels.astype(np.float32) / 255.0 - mean_arr) / std_arr
    if layout.channels_first:
        x = x.transpose(0, 3, 1, 2)
    mode = "grayscale" if layout.channels == 1 else "RGB"
    description = (
        f"{len(entries)} images in {len(classes)} class folders; {mode}, resized to "
        f"{layout.height}x{layout.width} (bilinear), scaled to [0, 1], normalised with mean "
        f"{list(mean)} and std {list(std)}, {layout.describe()}"
    )
    return Dataset(
        {inputs[0].name: np.ascontiguousarray(x, dtype=np.float32)},
        labels,
        classes=tuple(classes),
        description=description,
    )


def _normaliser(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[np.ndarray, np.ndarray]:
    for name, values in (("image_mean", mean), ("image_std", std)):
        if len(values) not in (1, channels):
            raise EngineError(
                f"evaluate.{name} has {len(values)} values; give 1 or {channels} (one per "
                "channel of the model's input)."
            )
    return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


def image_entries(infos: Sequence[zipfile.ZipInfo]) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class folder, member) for every image, in a stable order: how an image-folder zip is
    read (hidden files, macOS metadata and non-images skipped; each image's folder is its
    class)."""
    entries = []
    for member in infos:
        name = PurePosixPath(member.filename)
        hidden = any(part.startswith((".", "__MACOSX")) for part in name.parts)
        if member.is_dir() or hidden or name.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(name.parts) < 2:
            raise EngineError(
                f"{member.filename!r} is not inside a class folder. Put each class's images in "
                "a folder named after the class (cats/001.png, dogs/001.png)."
            )
        entries.append((name.parent.name, member))
    if not entries:
        raise EngineError(
            "The .zip holds no images (.png, .jpg, .bmp, .webp, .gif) in class folders."
        )
    if len(entries) > MAX_IMAGES:
        raise EngineError(f"The .zip holds more than {MAX_IMAGES:,} images.")
    return sorted(entries, key=lambda e: e[1].filename)


def _decode(archive: zipfile.ZipFile, member: zipfile.ZipInfo, layout: ImageLayout) -> np.ndarray:
    from PIL import Image

    try:
        with archive.open(member) as handle, Image.open(handle) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise EngineError(
                    f"{member.filename!r} is {width}x{height} pixels, over the limit of "
                    f"{MAX_IMAGE_PIXELS:,}."
                )
            converted = image.convert("L" if layout.channels == 1 else "RGB")
            resized = converted.resize((layout.width, layout.height), Image.Resampling.BILINEAR)
            array = np.asarray(resized, dtype=np.uint8)
    except (*ZIP_ERRORS, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError is an OSError. A header claiming over twice Pillow's own
        # pixel bound raises DecompressionBombError in Image.open, before the check above.
        raise EngineError(
            f"{member.filename!r} could not be read as an image: {short_message(exc)}"
        ) from None
    return array[..., None] if array.ndim == 2 else array
