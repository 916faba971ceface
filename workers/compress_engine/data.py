"""Datasets: samples (and optional class labels) for calibration, accuracy and fidelity.

A dataset is a NumPy `.npz` archive: one array per model input, named after the input (or a
single array `x` for a one-input model), samples along the first axis, plus optional integer
class ids in `y` or `labels`. Archives are read with `allow_pickle=False`, so object arrays
are refused instead of unpickled.
"""

from __future__ import annotations

import itertools
import math
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.errors import EngineError, short_message
from compress_engine.tensors import TensorInfo

LABEL_NAMES = ("y", "labels")
MAX_ARRAYS = 64
# Uncompressed bytes of all arrays together; the whole dataset is held in memory.
MAX_DATASET_BYTES = 4 * 1024**3

_SAVE_HINT = "Save it with numpy.savez(path, x=inputs, y=labels)."
# numpy.savez writes format 1.0, or 2.0 for very large headers; 3.0 (UTF-8 field names, for
# structured dtypes, which datasets cannot use anyway) is refused.
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_PICKLE_REFUSAL = (
    "holds Python objects; only numeric arrays are accepted (they would need unpickling, "
    "which ModelPress never does)."
)


def split_sizes(samples: int, fractions: Sequence[float]) -> list[int]:
    """Samples per part when `samples` are split by `fractions`, the rest last.

    Each part gets round(samples * fraction). With at least two samples, a part with a
    fraction above zero gets at least one, but each part first keeps one back for every later
    non-empty part and for the rest (when the fractions leave any): with fewer samples than
    parts, the earlier parts give way.
    """
    if any(not 0.0 <= f <= 1.0 for f in fractions) or sum(fractions) > 1.0 + 1e-9:
        raise ValueError("split fractions must lie in [0, 1] and add up to at most 1")
    sizes, left = [], samples
    for i, fraction in enumerate(fractions):
        size = round(samples * fraction)
        if samples >= 2:
            # Keep one sample for each later non-empty part (and the rest, if any is left).
            later = sum(1 for f in fractions[i + 1 :] if f > 0) + (sum(fractions) < 1.0)
            size = min(max(size, 1 if fraction > 0 else 0), max(left - later, 0))
        size = min(size, left)
        sizes.append(size)
        left -= size
    return [*sizes, left]


@dataclass(frozen=True)
class Dataset:
    """Samples along axis 0 of every input array; labels (if any) are int64 class ids."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()  # class names by label id, where the source names them
    description: str = ""  # how the samples were made (e.g. image preprocessing)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise EngineError("A dataset needs at least one input array.")
        counts = {n: (a.shape[0] if a.ndim else None) for n, a in self.inputs.items()}
        if self.labels is not None:
            counts[LABEL_NAMES[0]] = self.labels.shape[0] if self.labels.ndim else None
        if None in counts.values():
            scalars = [n for n, c in counts.items() if c is None]
            raise EngineError(
                f"Dataset arrays need a sample dimension first; {scalars} are scalars."
            )
        if len(set(counts.values())) != 1:
            raise EngineError(
                f"Every dataset array needs the same number of samples; got {counts}."
            )

    @property
    def samples(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])

    def take(self, index: np.ndarray | slice) -> Dataset:
        """The samples at `index` (an index array or a slice), in that order."""
        labels = None if self.labels is None else self.labels[index]
        inputs = {n: a[index] for n, a in self.inputs.items()}
        return Dataset(inputs, labels, self.classes, self.description)

    def split(self, *fractions: float, seed: int) -> tuple[Dataset, ...]:
        """Consecutive parts of a fixed-seed shuffle, one per fraction, then the rest.

        split(0.5, seed=0) gives (calibration, evaluation); split(0.3, 0.4, seed=0) gives
        (calibration, training, evaluation), whose first part is the same as with one
        fraction of 0.3. Parts are disjoint and together hold every sample (split_sizes).
        """
        sizes = split_sizes(self.samples, fractions)
        order = np.random.default_rng(seed).permutation(self.samples)
        bounds = np.cumsum([0, *sizes])
        return tuple(self.take(order[a:b]) for a, b in itertools.pairwise(bounds))

    def batches(
        self, batch_size: int, *, drop_last: bool = False
    ) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """(feed, labels) per batch of `batch_size` samples, in order."""
        for start in range(0, self.samples, batch_size):
            stop = start + batch_size
            if drop_last and stop > self.samples:
                return
            part = self.take(slice(start, stop))
            yield part.inputs, part.labels

    def for_model(self, inputs: Sequence[TensorInfo]) -> Dataset:
        """This dataset checked against (and cast to) the model's inputs.

        A single array `x` feeds a one-input model. Fixed dims must match, float64 is cast to
        the float type the model wants, and ints to the int type it wants.
        """
        names = [t.name for t in inputs]
        arrays = dict(self.inputs)
        if list(arrays) == ["x"] and len(names) == 1 and names != ["x"]:
            arrays = {names[0]: arrays["x"]}
        if set(arrays) != set(names):
            raise EngineError(
                f"The dataset has arrays {sorted(arrays)} but the model's inputs are {names}. "
                "Name each array after a model input (or use a single array `x` for a "
                "one-input model)."
            )
        fitted = {t.name: _fit(t, arrays[t.name]) for t in inputs}
        return Dataset(fitted, self.labels, self.classes, self.description)


def load_dataset(
    path: Path | str,
    inputs: Sequence[TensorInfo] | None = None,
    *,
    image_mean: Sequence[float] = (0.0,),
    image_std: Sequence[float] = (1.0,),
) -> Dataset:
    """Read a `.npz` dataset, or a `.zip` of class folders of images (which needs `inputs`:
    the model's input shape decides size, channels and layout); with `inputs` the result is
    checked against the model's inputs.

    Raises EngineError for anything the user can fix (wrong format, names, shapes, dtypes).
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"The dataset file {path.name!r} does not exist.")
    if path.suffix.lower() == ".zip":
        if inputs is None:
            raise EngineError(
                "An image-folder dataset (.zip) is read against the model's input shape; "
                "give it to compress() together with the model."
            )
        from compress_engine.images import load_image_folder

        images = load_image_folder(path, inputs, mean=image_mean, std=image_std)
        return images.for_model(inputs)
    arrays = _read_npz(path)
    labels_name = next((n for n in LABEL_NAMES if n in arrays), None)
    extra_labels = [n for n in LABEL_NAMES if n in arrays and n != labels_name]
    if extra_labels:
        raise EngineError("The dataset holds both `y` and `labels`; keep one label array.")
    labels = None if labels_name is None else _labels(labels_name, arrays.pop(labels_name))
    if not arrays:
        raise EngineError(
            f"The dataset holds labels but no inputs; name the input array `x`. {_SAVE_HINT}"
        )
    dataset = Dataset(arrays, labels)
    if dataset.samples == 0:
        raise EngineError("The dataset has no samples.")
    return dataset if inputs is None else dataset.for_model(inputs)


def as_dataset(data: Dataset | Path | str | Mapping[str, np.ndarray]) -> Dataset:
    """A Dataset from a Dataset, a `.npz` path, or a mapping of arrays (labels under y/labels)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Path | str):
        return load_dataset(data)
    if isinstance(data, Mapping):
        arrays = {n: np.asarray(a) for n, a in data.items()}
        labels_name = next((n for n in LABEL_NAMES if n in arrays), None)
        labels = None if labels_name is None else _labels(labels_name, arrays.pop(labels_name))
        return Dataset(arrays, labels)
    raise EngineError(f"A dataset must be a .npz path or a Dataset, not {type(data).__name__}.")


# --- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrayHeader:
    """What one `.npy` member of an `.npz` declares, read without loading its data."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_array_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> ArrayHeader:
    """The header of one `.npy` member, checked before any data is read: a known format, a
    numeric dtype (never objects, which would need unpickling), no negative or zero-size
    sample dims, and data that fits in the member: a header cannot make a reader allocate
    more than the archive holds. Raises EngineError."""
    name = member.filename.removesuffix(".npy")
    try:
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            reader = NPY_HEADER_READERS.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = reader(handle)
            data_start = handle.tell()
    except ZIP_ERRORS as exc:
        raise EngineError(
            f"Array {name!r} is not a valid .npy array: {short_message(exc, 200)}"
        ) from None
    if dtype.hasobject:
        raise EngineError(f"Array {name!r} {_PICKLE_REFUSAL}")
    if dtype.kind not in "biuf":
        raise EngineError(f"Array {name!r} has dtype {dtype}; only numbers and booleans.")
    header = ArrayHeader(name, tuple(int(d) for d in shape), dtype, bool(fortran_order))
    if any(d < 0 for d in header.shape):
        raise EngineError(f"Array {name!r} declares a negative dimension: {list(header.shape)}.")
    if len(header.shape) > 1 and math.prod(header.shape[1:]) == 0:
        raise EngineError(
            f"Array {name!r} has shape {list(header.shape)}: every sample needs at least one value."
        )
    held = member.file_size - data_start
    if header.nbytes > held:
        raise EngineError(
            f"Array {name!r} is truncated: its header declares shape {list(header.shape)} of "
            f"{dtype} ({header.nbytes:,} bytes), but the archive holds {max(held, 0):,} bytes "
            f"of data. {_SAVE_HINT}"
        )
    return header


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if not members:
                raise EngineError("The dataset .npz holds no arrays.")
            if len(members) > MAX_ARRAYS:
                raise EngineError(f"The dataset .npz holds more than {MAX_ARRAYS} arrays.")
            bad = [m.filename for m in members if not m.filename.endswith(".npy")]
            if bad:
                raise EngineError(f"The dataset .npz holds {bad[0]!r}, which is not a .npy array.")
            headers = [read_array_header(archive, m) for m in members]
    except ZIP_ERRORS:
        raise EngineError(f"The dataset is not a NumPy .npz archive. {_SAVE_HINT}") from None
    total = sum(h.nbytes for h in headers)
    if total > MAX_DATASET_BYTES:
        raise EngineError(
            f"The dataset holds {total / 1024**3:.1f} GiB of arrays; the limit is "
            f"{MAX_DATASET_BYTES / 1024**3:.0f} GiB. Use a subset for calibration and evaluation."
        )
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            # The checked members only: np.load lists folder entries as arrays too.
            for header in headers:
                arrays[header.name] = npz[header.name]
    except ZIP_ERRORS as exc:
        # The headers were checked; what fails now is the data (a bad CRC, a cut stream).
        raise EngineError(f"The dataset .npz cannot be read: {short_message(exc, 200)}") from None
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise EngineError(f"Dataset array {name!r} is not a numeric array.")
    return arrays


def _labels(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise EngineError(
            f"Labels {name!r} must be a 1-D integer array of class ids, got {arr.dtype} with "
            f"shape {list(arr.shape)}."
        )
    if arr.size and int(arr.min()) < 0:
        raise EngineError(f"Labels {name!r} must be class ids >= 0; found {int(arr.min())}.")
    return arr.astype(np.int64, copy=False)


def _fit(t: TensorInfo, arr: np.ndarray) -> np.ndarray:
    """Check one array against a model input and cast it to the input's dtype."""
    want = np.dtype(t.dtype)
    got = arr.dtype
    if got != want:
        same_kind = (got.kind == want.kind == "f") or (got.kind in "iu" and want.kind in "iu")
        if not same_kind or (want.kind in "iu" and not _ints_fit(arr, want)):
            raise EngineError(
                f"Dataset array for input {t.name!r} has dtype {got}, but the model wants "
                f"{want}. Save it as {want}."
            )
        arr = arr.astype(want)
    if t.rank_known:
        if arr.ndim != len(t.shape):
            raise EngineError(
                f"Dataset array for input {t.name!r} has shape {list(arr.shape)} ({arr.ndim} "
                f"dims), but the input has {len(t.shape)} dims ({_fmt(t.shape)}); the first "
                "dim is the sample axis."
            )
        for i, (dim, size) in enumerate(zip(t.shape, arr.shape, strict=True)):
            if i == 0:
                continue  # samples; batching adapts to a fixed batch dim
            if isinstance(dim, int) and dim > 0 and dim != size:
                raise EngineError(
                    f"Dataset array for input {t.name!r} has shape {list(arr.shape)}, but the "
                    f"model fixes dim {i} at {dim} ({_fmt(t.shape)})."
                )
    return np.ascontiguousarray(arr)


def _ints_fit(arr: np.ndarray, want: np.dtype) -> bool:
    if arr.size == 0:
        return True
    info = np.iinfo(want)
    return info.min <= int(arr.min()) and int(arr.max()) <= info.max


def _fmt(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
