"""What an uploaded dataset holds, read without trusting it and the way compress() will read
it: `.npz` arrays (from their headers: no pickles, nothing loaded but the labels) and `.zip`
image folders (compress_engine.dataset_images).

`inspect_dataset` answers before a job ever runs, so a dataset it accepts is one a job can
load; every refusal is an EngineError whose message says what to do. A `.npz` may carry a
manifest (data_layout.MANIFEST) naming sample axes and constants; samples are counted with
the loader's own function (data_layout.sample_count).
"""

from __future__ import annotations

import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.data import (
    LABEL_NAMES,
    MAX_ARRAYS,
    MAX_DATASET_BYTES,
    NPY_HEADER_READERS,
    ArrayHeader,
    read_array_header,
)
from compress_engine.data_layout import (
    MANIFEST,
    Layout,
    parse_manifest,
    read_manifest,
    sample_count,
)
from compress_engine.errors import EngineError, short_message

NPZ_PREVIEWS = 16
MAX_HISTOGRAM_CLASSES = 1_000
# Labels are read for the histogram only up to this many samples (8 bytes each at most).
MAX_HISTOGRAM_SAMPLES = 8_000_000
# Values per .npz sample shown as a preview (3x512x512 fits).
MAX_PREVIEW_VALUES = 1 << 20

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")


@dataclass
class DatasetInfo:
    """A summary of one dataset file: what a job will see, and what a preview shows."""

    kind: Literal["npz", "images"]
    samples: int
    # name -> {"shape", "dtype"}, plus "sample_axis" (when not 0) or "constant": true
    arrays: dict[str, dict] = field(default_factory=dict)
    label_array: str = ""  # "y" or "labels" when the .npz has labels
    classes: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "count"}]
    image_width: int | None = None  # image folders: the most common image size
    image_height: int | None = None
    image_sizes_vary: bool = False
    image_channels: str = ""  # "RGB" or "L"
    image_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # Samples worth a thumbnail: {"array", "index", "label"} (.npz) or {"label", "member"}.
    previews: list[dict[str, Any]] = field(default_factory=list)


def inspect_dataset(
    path: Path, *, name: str, max_bytes: int, max_samples: int | None = None
) -> DatasetInfo:
    """What the dataset file at `path` (uploaded as `name`) holds, by its suffix: `.npz`
    arrays or `.zip` image folders. `max_bytes` bounds what an image zip may unpack to;
    `max_samples` (if given) the samples of a `.npz`. Raises EngineError."""
    suffix = PurePosixPath(name.lower()).suffix
    if suffix == ".npz":
        return _inspect_npz(path, max_samples)
    if suffix == ".zip":
        from compress_engine.dataset_images import inspect_image_folders

        return inspect_image_folders(path, max_bytes=max_bytes)
    raise EngineError(
        "Datasets are .npz files (numpy.savez(path, x=inputs, y=labels), with arrays named "
        "after the model's inputs or `x`, optional integer labels `y`, and an optional "
        f"`{MANIFEST}` manifest for sample axes and constants) or .zip files of image "
        "folders, one folder per class (cats/001.png, dogs/001.png)."
    )


# --- .npz -----------------------------------------------------------------------------------


def _inspect_npz(path: Path, max_samples: int | None) -> DatasetInfo:
    arrays, samples, label_array = _npz_structure(path, max_samples)
    info = DatasetInfo(kind="npz", samples=samples, arrays=arrays, label_array=label_array)
    labels = None
    if label_array and samples <= MAX_HISTOGRAM_SAMPLES:
        labels = _npz_labels(path, label_array)
        if labels.size and int(labels.min()) < 0:
            # compress() refuses them when a job loads the dataset: say so now.
            raise EngineError(
                f"Labels {label_array!r} must be class ids >= 0; found {int(labels.min())}."
            )
    if labels is not None:
        values, counts = np.unique(labels, return_counts=True)
        if len(values) <= MAX_HISTOGRAM_CLASSES:
            info.classes = [
                {"name": str(int(v)), "count": int(c)} for v, c in zip(values, counts, strict=True)
            ]
    image_array = next(
        (
            name
            for name, a in arrays.items()
            if name != label_array
            and "sample_axis" not in a
            and not a.get("constant")
            and npz_image_layout(a["shape"]) is not None
        ),
        None,
    )
    if image_array is not None and _c_ordered(path, image_array):
        info.previews = [
            {
                "array": image_array,
                "index": i,
                "label": "" if labels is None else str(int(labels[i])),
            }
            for i in range(min(NPZ_PREVIEWS, samples))
        ]
    return info


def _npz_structure(path: Path, max_samples: int | None) -> tuple[dict[str, dict], int, str]:
    """(arrays, samples, label array) from the array headers alone."""
    try:
        archive = zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise EngineError(
            "The file is not a NumPy .npz archive. Save your arrays with "
            "numpy.savez(path, x=inputs, y=labels)."
        ) from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise EngineError("The .npz archive holds no arrays.")
        if len(members) > MAX_ARRAYS:
            raise EngineError(f"The .npz archive holds more than {MAX_ARRAYS} arrays.")
        notes = [m for m in members if m.filename == f"{MANIFEST}.npy"]
        layout = parse_manifest(read_manifest(archive, notes[0])) if notes else Layout()
        headers = [_header(archive, m) for m in members if m not in notes]
    total = sum(h.nbytes for h in headers)
    if total > MAX_DATASET_BYTES:
        # What a job could not load: the engine holds the whole dataset in memory.
        raise EngineError(
            f"The arrays hold {total / 1024**3:.1f} GiB; a dataset may hold at most "
            f"{MAX_DATASET_BYTES / 1024**3:.0f} GiB. Use a subset for calibration and evaluation."
        )
    arrays = {h.name: {"shape": list(h.shape), "dtype": h.dtype.name} for h in headers}
    return _validate(arrays, layout, max_samples)


def _header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> ArrayHeader:
    if not member.filename.endswith(".npy"):
        raise EngineError(f"{member.filename!r} is not a .npy array; only arrays are accepted.")
    name = member.filename[: -len(".npy")]
    if not _NAME_RE.match(name):
        raise EngineError(f"Array name {name!r} is not allowed.")
    return read_array_header(archive, member)


def _validate(
    arrays: dict[str, dict], layout: Layout, max_samples: int | None
) -> tuple[dict[str, dict], int, str]:
    if all(n in arrays for n in LABEL_NAMES):
        raise EngineError("The .npz holds both `y` and `labels`; keep one label array.")
    label = next((n for n in LABEL_NAMES if n in arrays), "")
    inputs = {n: a for n, a in arrays.items() if n not in LABEL_NAMES}
    if not inputs:
        held = "labels but no inputs" if label else "no input arrays"
        raise EngineError(f"The .npz holds {held}; name the input array `x`.")
    layout.check_names(inputs, f"`{MANIFEST}` manifest")
    shapes = {n: a["shape"] for n, a in inputs.items()}
    if label and not arrays[label]["shape"]:
        raise EngineError(f"Labels {label!r} must be one class id per sample, not a scalar.")
    labels = (label, arrays[label]["shape"][0]) if label else None
    samples = sample_count(shapes, layout, labels)
    for name, a in inputs.items():
        axis = layout.axis(name, len(a["shape"]))
        if axis is None:
            a["constant"] = True
        elif axis:
            a["sample_axis"] = axis
    if samples == 0:
        raise EngineError("The dataset has no samples.")
    if max_samples is not None and samples > max_samples:
        raise EngineError(f"The dataset has {samples:,} samples; at most {max_samples:,}.")
    if label:
        labels = arrays[label]
        if len(labels["shape"]) != 1 or np.dtype(labels["dtype"]).kind not in "iu":
            raise EngineError(
                f"Labels {label!r} must be a 1-D integer array of class ids, got "
                f"{labels['dtype']} with shape {labels['shape']}."
            )
    return arrays, samples, label


def _npz_labels(path: Path, name: str) -> np.ndarray:
    """Only the label array is read (a few bytes per sample), never unpickled."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return np.asarray(npz[name])
    except ZIP_ERRORS as exc:
        raise EngineError(f"The labels {name!r} cannot be read: {short_message(exc)}") from exc


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


def npz_sample(handle: IO[bytes], array: str, index: int) -> np.ndarray:
    """Sample `index` of a C-ordered, image-shaped array of a stored `.npz`, read without
    loading the rest, as [H, W] or [H, W, C] values. Raises EngineError when the file no
    longer yields it."""
    try:
        with zipfile.ZipFile(handle) as archive, archive.open(f"{array}.npy") as data:
            shape, fortran, dtype = _npy_header(data)
            layout = npz_image_layout(list(shape))
            if layout is None or fortran or not 0 <= index < shape[0]:
                raise ValueError("sample not readable")
            size = math.prod(shape[1:]) * dtype.itemsize
            data.read(index * size)  # earlier samples (at most NPZ_PREVIEWS of them)
            raw = data.read(size)
    except (KeyError, *ZIP_ERRORS) as exc:
        raise EngineError(
            f"Sample {index} of {array!r} cannot be read: {short_message(exc)}"
        ) from exc
    if len(raw) != size:
        raise EngineError(f"Sample {index} of {array!r} is truncated.")
    sample = np.frombuffer(raw, dtype=dtype).reshape(shape[1:])
    return sample.transpose(1, 2, 0) if layout == "CHW" else sample
