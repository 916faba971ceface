"""What an image-folder `.zip` holds (compress_engine.dataset_info.inspect_dataset).

An image-folder zip holds one folder per class (`cats/001.png`, `dogs/001.png`). It is read
the way compress() reads it (compress_engine.images: class = the image's parent folder,
sorted; hidden files and other suffixes skipped) and, before anything is decoded, checked like
every upload archive (compress_engine.archives: member count, unpacked size, no paths outside
the archive, no links). Every image is then decoded once, with a pixel bound per image and in
all, to report unreadable files by name and to record what a preview and the job form use:
class counts, the common image size, grayscale or colour, and the mean and standard deviation
per channel of the pixels scaled to [0, 1].
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from compress_engine import archives, images
from compress_engine.archives import ZIP_ERRORS
from compress_engine.dataset_info import DatasetInfo
from compress_engine.errors import EngineError, short_message

# Decoded pixels over all images (the statistics need every image): about 20,000 RGB images
# of 224x224. Bigger sets should be resized before zipping.
MAX_TOTAL_PIXELS = 1_000_000_000
PREVIEWS_PER_CLASS = 4
PREVIEW_CLASSES = 24
# Unreadable images named in one message; the rest are counted.
_NAMED_FAILURES = 5

_IMAGE_HINT = (
    "Zip a folder holding one sub-folder of images per class (cats/001.png, dogs/001.png)."
)

_LEVELS = np.arange(256, dtype=np.float64)
# Pixels counted per bincount call: bounds the temporary copy of a large image.
_CHUNK_PIXELS = 1 << 20


@dataclass
class _Stats:
    """A histogram of the 256 pixel values per channel: exact, and small whatever the size
    of the images."""

    rgb: np.ndarray = field(default_factory=lambda: np.zeros((3, 256), dtype=np.int64))
    gray: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    colour: bool = False

    @property
    def pixels(self) -> int:
        return int(self.gray.sum())

    def add(self, rgb: np.ndarray, gray: np.ndarray) -> None:
        rows = max(1, _CHUNK_PIXELS // max(1, rgb.shape[1]))
        for start in range(0, rgb.shape[0], rows):
            part = rgb[start : start + rows]
            for c in range(3):
                self.rgb[c] += np.bincount(part[..., c].ravel(), minlength=256)
            self.gray += np.bincount(gray[start : start + rows].ravel(), minlength=256)
            self.colour = self.colour or not (
                np.array_equal(part[..., 0], part[..., 1])
                and np.array_equal(part[..., 0], part[..., 2])
            )

    def summary(self) -> dict[str, dict[str, list[float]]]:
        def moments(histograms: np.ndarray) -> dict[str, list[float]]:
            scaled = _LEVELS / 255.0
            counts = histograms / histograms.sum(axis=1, keepdims=True)
            mean = counts @ scaled
            variance = np.maximum(counts @ scaled**2 - mean**2, 0.0)
            return {
                "mean": [round(float(v), 6) for v in mean],
                "std": [round(float(v), 6) for v in np.sqrt(variance)],
            }

        return {"L": moments(self.gray[None]), "RGB": moments(self.rgb)}


def inspect_image_folders(path: Path, *, max_bytes: int) -> DatasetInfo:
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise EngineError(f"The file is not a readable .zip archive. {_IMAGE_HINT}") from exc
    with archive:
        infos = archive.infolist()
        # Read at call time: the limits are module attributes (tests lower them).
        archives.check_members([i for i in infos if not i.is_dir()], max_bytes, images.MAX_IMAGES)
        for info in infos:  # folders too: nothing in the archive may name a path outside it
            archives.inside(Path("."), info.filename)
        entries = _image_entries(infos)
        classes = sorted({folder for folder, _ in entries})
        counts = Counter(folder for folder, _ in entries)
        sizes: Counter[tuple[int, int]] = Counter()
        stats = _Stats()
        failures: list[str] = []
        for _, member in entries:
            try:
                rgb, gray = _decode(archive, member)
            except _Unreadable as exc:
                failures.append(f"{member.filename!r} ({exc})")
                continue
            sizes[(rgb.shape[1], rgb.shape[0])] += 1
            stats.add(rgb, gray)
            if stats.pixels > MAX_TOTAL_PIXELS:
                raise EngineError(
                    f"The images hold more than {MAX_TOTAL_PIXELS:,} pixels in all, more than an "
                    "upload decodes. Resize them (e.g. to the model's input size) before zipping."
                )
    if failures:
        named = ", ".join(failures[:_NAMED_FAILURES])
        more = len(failures) - _NAMED_FAILURES
        raise EngineError(
            f"{len(failures)} file{'s' if len(failures) != 1 else ''} could not be read as "
            f"images: {named}{f' and {more} more' if more > 0 else ''}. Remove or re-save them."
        )
    (width, height), _ = sizes.most_common(1)[0]
    return DatasetInfo(
        kind="images",
        samples=len(entries),
        classes=[{"name": name, "count": counts[name]} for name in classes],
        image_width=width,
        image_height=height,
        image_sizes_vary=len(sizes) > 1,
        image_channels="RGB" if stats.colour else "L",
        image_stats=stats.summary(),
        previews=_image_previews(entries, classes[:PREVIEW_CLASSES]),
    )


def _image_previews(
    entries: list[tuple[str, zipfile.ZipInfo]], classes: list[str]
) -> list[dict[str, str]]:
    """The first PREVIEWS_PER_CLASS images of each class shown, by class."""
    by_class: dict[str, list[str]] = {name: [] for name in classes}
    for folder, member in entries:
        chosen = by_class.get(folder)
        if chosen is not None and len(chosen) < PREVIEWS_PER_CLASS:
            chosen.append(member.filename)
    return [{"label": name, "member": m} for name, members in by_class.items() for m in members]


def _image_entries(infos: list[zipfile.ZipInfo]) -> list[tuple[str, zipfile.ZipInfo]]:
    """(class folder, member) per image, exactly as compress() will read them."""
    try:
        return images.image_entries(infos)
    except EngineError as exc:
        hint = "" if "folder named after the class" in str(exc) else f" {_IMAGE_HINT}"
        raise EngineError(f"{exc}{hint}") from exc


class _Unreadable(Exception):
    pass


def _decode(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [H, W, 3], grayscale [H, W]) uint8 pixels, converted as compress() converts."""
    from PIL import Image, UnidentifiedImageError

    try:
        with archive.open(member) as handle, Image.open(handle) as image:
            width, height = image.size  # from the header, before any pixel is decoded
            if width * height > images.MAX_IMAGE_PIXELS:
                raise EngineError(
                    f"{member.filename!r} is {width}x{height} pixels, over the limit of "
                    f"{images.MAX_IMAGE_PIXELS:,} per image."
                )
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise EngineError(f"{member.filename!r} is too large to decode: {exc}") from exc
    except (*ZIP_ERRORS, UnidentifiedImageError) as exc:
        raise _Unreadable(_short(exc)) from exc
    return rgb, gray


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


def image_sample(handle: IO[bytes], member: str, mode: str) -> np.ndarray:
    """The image `member` of a stored image-folder `.zip`, converted to `mode` ("RGB" or
    "L") as uint8 pixels. Raises EngineError when the file no longer yields it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with (
            zipfile.ZipFile(handle) as archive,
            archive.open(archive.getinfo(member)) as data,
            Image.open(data) as image,
        ):
            if image.size[0] * image.size[1] > images.MAX_IMAGE_PIXELS:
                raise ValueError("image too large")
            return np.asarray(image.convert(mode), dtype=np.uint8)
    except (KeyError, UnidentifiedImageError, Image.DecompressionBombError, *ZIP_ERRORS) as exc:
        raise EngineError(f"The image {member!r} cannot be read: {short_message(exc)}") from exc
