"""Dataset uploads, read without trusting them: `.npz` arrays and `.zip` image folders.

An image-folder zip holds one folder per class (`cats/001.png`, `dogs/001.png`). It is
checked the way the engine will read it (compress_engine.images: class = the image's parent
folder, sorted; hidden files and other suffixes skipped) and, before anything is decoded,
like every upload archive (compress_engine.archives: member count, unpacked size, no paths
outside the archive, no links). Every image is then decoded once, with a pixel bound per
image and in all, to report unreadable files by name and to record what the preview and the
job form use: class counts, the common image size, grayscale or colour, and the mean and
standard deviation per channel of the pixels scaled to [0, 1].

Sample thumbnails are rendered on request from the stored file (render_preview), by their
index in the list recorded here, so no name from a URL ever reaches the archive and no second
set of files has to follow the dataset through quotas and deletions.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.data import NPY_HEADER_READERS
from compress_engine.errors import short_message
from registry.models import Dataset
from registry.npz import NpzRejected, summarize_npz

# Decoded pixels over all images at upload (the preview's statistics need every image):
# about 20,000 RGB images of 224x224. Bigger sets should be resized before zipping.
MAX_TOTAL_PIXELS = 1_000_000_000
PREVIEWS_PER_CLASS = 4
PREVIEW_CLASSES = 24
NPZ_PREVIEWS = 16
MAX_HISTOGRAM_CLASSES = 1_000
# Labels are read for the histogram only up to this many samples (8 bytes each at most).
MAX_HISTOGRAM_SAMPLES = 8_000_000
# Values per .npz sample rendered as a thumbnail (3x512x512 fits).
MAX_PREVIEW_VALUES = 1 << 20
THUMBNAIL_SIDE = 96
# Unreadable images named in one message; the rest are counted.
_NAMED_FAILURES = 5

_IMAGE_HINT = (
    "Zip a folder holding one sub-folder of images per class (cats/001.png, dogs/001.png)."
)


class DatasetRejected(Exception):
    """An upload refused; the message says why and what to do."""


@dataclass
class DatasetFacts:
    """The Dataset fields an upload determines."""

    kind: str
    samples: int
    arrays: dict[str, dict] = field(default_factory=dict)
    label_array: str = ""
    classes: list[dict[str, Any]] = field(default_factory=list)
    image_width: int | None = None
    image_height: int | None = None
    image_sizes_vary: bool = False
    image_channels: str = ""
    image_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    previews: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, dataset: Dataset) -> None:
        for name, value in vars(self).items():
            setattr(dataset, name, value)


def stored_filename(upload_name: str) -> str:
    """The fixed name the file is stored under (Dataset.stored_suffix reads it back)."""
    return "data.zip" if upload_name.lower().endswith(".zip") else "data.npz"


def inspect_upload(path: Path, upload_name: str, *, max_bytes: int) -> DatasetFacts:
    """What a dataset upload holds, by its suffix: `.npz` arrays or `.zip` image folders."""
    suffix = PurePosixPath(upload_name.lower()).suffix
    if suffix == ".npz":
        return _inspect_npz(path)
    if suffix == ".zip":
        return _inspect_image_folders(path, max_bytes=max_bytes)
    raise DatasetRejected(
        "Datasets are .npz files (numpy.savez(path, x=inputs, y=labels), with arrays named "
        "after the model's inputs or `x`, and optional integer labels `y`) or .zip files of "
        "image folders, one folder per class (cats/001.png, dogs/001.png)."
    )


# --- .npz -----------------------------------------------------------------------------------


def _inspect_npz(path: Path) -> DatasetFacts:
    try:
        summary = summarize_npz(path)
    except NpzRejected as exc:
        raise DatasetRejected(str(exc)) from exc
    facts = DatasetFacts(
        kind=Dataset.Kind.NPZ,
        samples=summary.samples,
        arrays=summary.arrays,
        label_array=summary.label_array,
    )
    labels = None
    if summary.label_array and summary.samples <= MAX_HISTOGRAM_SAMPLES:
        labels = _npz_labels(path, summary.label_array)
        if labels.size and int(labels.min()) < 0:
            # The engine refuses them when a job loads the dataset: say so now.
            raise DatasetRejected(
                f"Labels {summary.label_array!r} must be class ids >= 0; found {int(labels.min())}."
            )
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        if len(values) <= MAX_HISTOGRAM_CLASSES:
            facts.classes = [
                {"name": str(int(v)), "count": int(c)} for v, c in zip(values, counts, strict=True)
            ]
    image_array = next(
        (
            name
            for name, a in summary.arrays.items()
            if name != summary.label_array and npz_image_layout(a["shape"]) is not None
        ),
        None,
    )
    if image_array is not None and _c_ordered(path, image_array):
        facts.previews = [
            {
                "array": image_array,
                "index": i,
                "label": "" if labels is None else str(int(labels[i])),
            }
            for i in range(min(NPZ_PREVIEWS, summary.samples))
        ]
    return facts


def _npz_labels(path: Path, name: str) -> np.ndarray:
    """Only the label array is read (a few bytes per sample), never unpickled."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz[name])
    except ZIP_ERRORS as exc:
        raise DatasetRejected(f"The labels {name!r} cannot be read: {short_message(exc)}") from exc


def npz_image_layout(shape: list[int]) -> str | None:
    """The sample layout ("CHW", "HWC" or "HW") when arrays of this shape hold images small
    enough to preview, else None."""
    dims = shape[1:]
    if math.prod(dims) > MAX_PREVIEW_VALUES:
        return None
    if len(dims) == 3 and dims[0] in (1, 3) and min(dims[1:]) >= 4:
        return "CHW"
    if len(dims) == 3 and dims[2] in (1, 3) and min(dims[:2]) >= 4:
        return "HWC"
    if len(dims) == 2 and min(dims) >= 4:
        return "HW"
    return None


def _c_ordered(path: Path, name: str) -> bool:
    # Leading samples of a C-ordered array are its first bytes: previews read only those.
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as handle:
            return not _npy_header(handle)[1]
    except ZIP_ERRORS:
        return False  # no previews; the header itself was checked already


def _npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(handle)
    reader = NPY_HEADER_READERS.get(version)
    if reader is None:
        raise ValueError(f"unsupported .npy format version {version}")
    return reader(handle)


# --- .zip image folders ---------------------------------------------------------------------


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


def _inspect_image_folders(path: Path, *, max_bytes: int) -> DatasetFacts:
    from compress_engine.archives import check_members, inside
    from compress_engine.errors import EngineError
    from compress_engine.images import MAX_IMAGES

    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise DatasetRejected(f"The file is not a readable .zip archive. {_IMAGE_HINT}") from exc
    with archive:
        infos = archive.infolist()
        try:
            check_members([i for i in infos if not i.is_dir()], max_bytes, MAX_IMAGES)
            for info in infos:  # folders too: nothing in the archive may name a path outside it
                inside(Path("."), info.filename)
        except EngineError as exc:
            raise DatasetRejected(str(exc)) from exc
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
                raise DatasetRejected(
                    f"The images hold more than {MAX_TOTAL_PIXELS:,} pixels in all, more than an "
                    "upload decodes. Resize them (e.g. to the model's input size) before zipping."
                )
    if failures:
        named = ", ".join(failures[:_NAMED_FAILURES])
        more = len(failures) - _NAMED_FAILURES
        raise DatasetRejected(
            f"{len(failures)} file{'s' if len(failures) != 1 else ''} could not be read as "
            f"images: {named}{f' and {more} more' if more > 0 else ''}. Remove or re-save them."
        )
    (width, height), _ = sizes.most_common(1)[0]
    return DatasetFacts(
        kind=Dataset.Kind.IMAGES,
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
    """(class folder, member) per image, exactly as the engine will read them."""
    from compress_engine import EngineError
    from compress_engine.images import image_entries

    try:
        return image_entries(infos)
    except EngineError as exc:
        hint = "" if "folder named after the class" in str(exc) else f" {_IMAGE_HINT}"
        raise DatasetRejected(f"{exc}{hint}") from exc


class _Unreadable(Exception):
    pass


def _decode(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [H, W, 3], grayscale [H, W]) uint8 pixels, converted as the engine converts."""
    from PIL import Image, UnidentifiedImageError

    from compress_engine.images import MAX_IMAGE_PIXELS

    try:
        with archive.open(member) as handle, Image.open(handle) as image:
            width, height = image.size  # from the header, before any pixel is decoded
            if width * height > MAX_IMAGE_PIXELS:
                raise DatasetRejected(
                    f"{member.filename!r} is {width}x{height} pixels, over the limit of "
                    f"{MAX_IMAGE_PIXELS:,} per image."
                )
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise DatasetRejected(f"{member.filename!r} is too large to decode: {exc}") from exc
    except (*ZIP_ERRORS, UnidentifiedImageError) as exc:
        raise _Unreadable(_short(exc)) from exc
    return rgb, gray


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


# --- previews -------------------------------------------------------------------------------


class PreviewUnavailable(Exception):
    """The stored file no longer yields this sample (the view answers 404)."""


def render_preview(dataset: Dataset, index: int) -> bytes:
    """Sample `index` of dataset.previews as a PNG thumbnail (longest side at most
    THUMBNAIL_SIDE), decoded from the stored file and re-encoded: the browser never gets
    the uploaded bytes."""
    from PIL import Image

    if not 0 <= index < len(dataset.previews):
        raise PreviewUnavailable(f"no sample {index}")
    preview = dataset.previews[index]
    try:
        with dataset.file.open("rb") as handle:
            if dataset.is_image_folder:
                image = _image_member(handle, preview["member"], dataset.image_channels or "RGB")
            else:
                image = _npz_sample(handle, dataset, preview["array"], int(preview["index"]))
    except (KeyError, *ZIP_ERRORS) as exc:
        raise PreviewUnavailable(str(exc)) from exc
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _image_member(handle: IO[bytes], member: str, mode: str):
    from PIL import Image

    from compress_engine.images import MAX_IMAGE_PIXELS

    with (
        zipfile.ZipFile(handle) as archive,
        archive.open(archive.getinfo(member)) as data,
        Image.open(data) as image,
    ):
        if image.size[0] * image.size[1] > MAX_IMAGE_PIXELS:
            raise ValueError("image too large")
        converted = image.convert(mode)
        converted.load()
        return converted


def _npz_sample(handle: IO[bytes], dataset: Dataset, array: str, index: int):
    """One leading sample of a C-ordered array, read without loading the rest, scaled to
    0-255 over its own range (display only)."""
    from PIL import Image

    layout = npz_image_layout(dataset.arrays[array]["shape"])
    if layout is None:
        raise ValueError("not image-shaped")
    with zipfile.ZipFile(handle) as archive, archive.open(f"{array}.npy") as data:
        shape, fortran, dtype = _npy_header(data)
        if fortran or not 0 <= index < shape[0]:
            raise ValueError("sample not readable")
        size = math.prod(shape[1:]) * dtype.itemsize
        data.read(index * size)  # earlier samples (at most NPZ_PREVIEWS of them)
        raw = data.read(size)
    if len(raw) != size:
        raise ValueError("truncated array")
    sample = np.frombuffer(raw, dtype=dtype).reshape(shape[1:]).astype(np.float64)
    if layout == "CHW":
        sample = sample.transpose(1, 2, 0)
    if sample.ndim == 3 and sample.shape[2] == 1:
        sample = sample[..., 0]
    sample = np.nan_to_num(sample)
    low, high = float(sample.min()), float(sample.max())
    scaled = (sample - low) / (high - low) * 255.0 if high > low else np.zeros_like(sample)
    return Image.fromarray(scaled.round().astype(np.uint8))


# --- the preview page -----------------------------------------------------------------------

HISTOGRAM_BARS = 50


@dataclass(frozen=True)
class Bar:
    name: str
    count: int
    width: float  # percent of the largest class, for the bar
    share: float  # percent of all samples


@dataclass(frozen=True)
class Thumbnail:
    index: int
    label: str


def preview_context(dataset: Dataset) -> dict[str, Any]:
    """What templates/registry/dataset.html shows."""
    classes = dataset.classes or []
    largest = max((c["count"] for c in classes), default=0)
    total = sum(c["count"] for c in classes) or 1
    bars = [
        Bar(
            name=c["name"],
            count=c["count"],
            width=round(100.0 * c["count"] / largest, 1) if largest else 0.0,
            share=round(100.0 * c["count"] / total, 1),
        )
        for c in classes[:HISTOGRAM_BARS]
    ]
    thumbnails = [Thumbnail(i, str(p.get("label", ""))) for i, p in enumerate(dataset.previews)]
    groups: dict[str, list[Thumbnail]] = {}
    for thumb in thumbnails:
        groups.setdefault(thumb.label, []).append(thumb)
    return {
        "dataset": dataset,
        "bars": bars,
        "hidden_classes": max(len(classes) - HISTOGRAM_BARS, 0),
        "preview_classes": len(groups),
        # Image folders: a row of samples per class; .npz: the leading samples in order.
        "thumbnail_groups": list(groups.items()) if dataset.is_image_folder else [],
        "thumbnails": [] if dataset.is_image_folder else thumbnails,
        "stats": dataset.image_stats.get(dataset.image_channels) if dataset.image_stats else None,
        "gray_stats": dataset.image_stats.get("L") if dataset.image_stats else None,
        "rgb_stats": dataset.image_stats.get("RGB") if dataset.image_stats else None,
    }
