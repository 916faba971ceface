"""Datasets: samples (and optional class labels) for calibration, accuracy and fidelity.

A dataset is a NumPy `.npz` archive: one array per model input, named after the input (or a
single array `x` for a one-input model), samples along the first axis unless its manifest
(data_layout.MANIFEST) or the recipe says otherwise, plus optional integer class ids in `y`
or `labels`. Constants (0-d arrays, or arrays the manifest or evaluate.constants name) are fed
as they are with every batch. Archives are read with `allow_pickle=False`, so object arrays
are refused instead of unpickled.
"""

from __future__ import annotations

import itertools
import math
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.data_layout import (
    MANIFEST,
    NPY_HEADER_READERS,
    Layout,
    batch_axes,
    declared_batch_axis,
    is_fixed,
    parse_manifest,
    read_manifest,
    sample_count,
)
from compress_engine.errors import EngineError, short_message
from compress_engine.tensors import TensorInfo

LABEL_NAMES = ("y", "labels")
MAX_ARRAYS = 64
# Uncompressed bytes of all arrays together; the whole dataset is held in memory.
MAX_DATASET_BYTES = 4 * 1024**3

_SAVE_HINT = "Save it with numpy.savez(path, x=inputs, y=labels)."
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
    """Samples along each input array's sample axis (axis 0 unless `layout` names another),
    constants fed as they are; labels (if any) are int64 class ids, one per sample."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    classes: tuple[str, ...] = ()  # class names by label id, where the source names them
    description: str = ""  # how the samples were made (e.g. image preprocessing)
    layout: Layout = field(default_factory=Layout)
    samples: int = field(init=False, default=0)  # along each array's sample axis

    def __post_init__(self) -> None:
        if not self.inputs:
            raise EngineError("A dataset needs at least one input array.")
        self.layout.check_names(self.inputs, "dataset layout")
        labels = None
        if self.labels is not None:
            if not self.labels.ndim:
                raise EngineError(f"Labels must be one per sample; {LABEL_NAMES[0]!r} is a scalar.")
            labels = (LABEL_NAMES[0], int(self.labels.shape[0]))
        shapes = {n: a.shape for n, a in self.inputs.items()}
        object.__setattr__(self, "samples", sample_count(shapes, self.layout, labels))

    def axis(self, name: str) -> int | None:
        """The sample axis of input `name`; None for a constant."""
        return self.layout.axis(name, self.inputs[name].ndim)

    @property
    def constants(self) -> list[str]:
        return [n for n in self.inputs if self.axis(n) is None]

    def take(self, index: np.ndarray | slice) -> Dataset:
        """The samples at `index` (an index array or a slice), in that order."""
        labels = None if self.labels is None else self.labels[index]
        inputs = {n: _take(a, index, self.axis(n)) for n, a in self.inputs.items()}
        return Dataset(inputs, labels, self.classes, self.description, self.layout)

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
        """(feed, labels) per batch of `batch_size` samples, in order; every feed holds the
        constants too, and each array's batch lies on its sample axis."""
        for start in range(0, self.samples, batch_size):
            stop = start + batch_size
            if drop_last and stop > self.samples:
                return
            part = self.take(slice(start, stop))
            # A batch cut along axis 1 is a strided view; runtimes want contiguous buffers.
            yield {n: np.asarray(a, order="C") for n, a in part.inputs.items()}, part.labels

    def samples_first(self, names: Sequence[str], purpose: str) -> list[np.ndarray]:
        """The arrays `names`, samples on axis 0, for code that indexes samples itself (torch
        training); EngineError for constants and other sample axes, which it cannot feed."""
        odd = [n for n in names if self.axis(n) != 0]
        if odd:
            raise EngineError(
                f"{purpose} feeds every input sample by sample along its first axis, but this "
                f"dataset has {', '.join(map(repr, odd))} as constants or with samples on "
                "another axis (a stateful model's inputs); quantize such a model instead."
            )
        return [self.inputs[n] for n in names]

    def with_recipe(
        self,
        sample_axis: Mapping[str, int] | None = None,
        constants: Mapping[str, Any] | None = None,
    ) -> Dataset:
        """This dataset with the recipe's evaluate.sample_axis and evaluate.constants applied:
        they override the manifest, and a constant may feed an input the dataset lacks."""
        if not sample_axis and not constants:
            return self
        inputs, layout = _with_recipe(self.inputs, self.layout, sample_axis, constants)
        return Dataset(inputs, self.labels, self.classes, self.description, layout)

    def for_model(self, inputs: Sequence[TensorInfo]) -> Dataset:
        """This dataset checked against (and cast to) the model's inputs, in their order.

        A single array `x` feeds a one-input model. Fixed dims must match, float64 is cast to
        the float type the model wants, and ints to the int type it wants. An array's samples
        move to the input's batch axis where the model's shape names one (`state [2, batch,
        128]`), so samples stored first and samples stored on axis 1 both feed it.
        """
        names = [t.name for t in inputs]
        arrays, layout = dict(self.inputs), self.layout
        if list(arrays) == ["x"] and len(names) == 1 and names != ["x"]:
            arrays, layout = {names[0]: arrays["x"]}, layout.renamed("x", names[0])
        if set(arrays) != set(names):
            raise EngineError(
                f"The dataset has arrays {sorted(arrays)} but the model's inputs are {names}. "
                "Name each array after a model input (or use a single array `x` for a "
                "one-input model)."
            )
        model_axes = batch_axes(inputs)
        fitted: dict[str, np.ndarray] = {}
        axes: dict[str, int] = {}
        for t in inputs:
            axis = layout.axis(t.name, arrays[t.name].ndim)
            if axis is None:
                fitted[t.name] = _fit_constant(t, arrays[t.name])
                continue
            want = declared_batch_axis(t, model_axes)
            fitted[t.name] = _fit(t, arrays[t.name], axis, want)
            if (want if want is not None else axis) != 0:
                axes[t.name] = want if want is not None else axis
        fitted_layout = Layout(axes, frozenset(n for n in names if n in layout.constants))
        return Dataset(fitted, self.labels, self.classes, self.description, fitted_layout)


def constant_array(name: str, value: Any) -> np.ndarray:
    """A recipe constant (a number or nested lists of numbers) as an array."""
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "biuf":
        raise EngineError(
            f"evaluate.constants[{name!r}] must be a number or a rectangular list of numbers; "
            f"got {value!r}."
        )
    return arr


def constant_for(t: TensorInfo, value: Any) -> np.ndarray:
    """A recipe constant checked against (and cast to) the model input it feeds."""
    return _fit_constant(t, constant_array(t.name, value))


def load_dataset(
    path: Path | str,
    inputs: Sequence[TensorInfo] | None = None,
    *,
    image_mean: Sequence[float] = (0.0,),
    image_std: Sequence[float] = (1.0,),
    sample_axis: Mapping[str, int] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> Dataset:
    """Read a `.npz` dataset, or a `.zip` of class folders of images (which needs `inputs`:
    the model's input shape decides size, channels and layout); with `inputs` the result is
    checked against the model's inputs. `sample_axis` and `constants` are the recipe's
    (evaluate.sample_axis / evaluate.constants): they apply before samples are counted.

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
        return images.with_recipe(sample_axis, constants).for_model(inputs)
    arrays, manifest = _read_npz(path)
    dataset = _assemble(arrays, manifest, sample_axis, constants)
    if dataset.samples == 0:
        raise EngineError("The dataset has no samples.")
    return dataset if inputs is None else dataset.for_model(inputs)


def as_dataset(
    data: Dataset | Path | str | Mapping[str, Any],
    *,
    sample_axis: Mapping[str, int] | None = None,
    constants: Mapping[str, Any] | None = None,
) -> Dataset:
    """A Dataset from a Dataset, a `.npz` path, or a mapping of arrays (labels under y/labels,
    an optional manifest under MANIFEST), with the recipe's sample axes and constants."""
    if isinstance(data, Dataset):
        return data.with_recipe(sample_axis, constants)
    if isinstance(data, Path | str):
        return load_dataset(data, sample_axis=sample_axis, constants=constants)
    if isinstance(data, Mapping):
        arrays = {n: np.asarray(a) for n, a in data.items() if n != MANIFEST}
        manifest = None if MANIFEST not in data else parse_manifest(str(np.asarray(data[MANIFEST])))
        return _assemble(arrays, manifest, sample_axis, constants)
    raise EngineError(f"A dataset must be a .npz path or a Dataset, not {type(data).__name__}.")


def _assemble(
    arrays: dict[str, np.ndarray],
    manifest: Layout | None,
    sample_axis: Mapping[str, int] | None,
    constants: Mapping[str, Any] | None,
) -> Dataset:
    """Labels and inputs apart, the manifest checked against the arrays it names, then the
    recipe's word on top."""
    labels_name = next((n for n in LABEL_NAMES if n in arrays), None)
    extra_labels = [n for n in LABEL_NAMES if n in arrays and n != labels_name]
    if extra_labels:
        raise EngineError("The dataset holds both `y` and `labels`; keep one label array.")
    labels = None if labels_name is None else _labels(labels_name, arrays.pop(labels_name))
    if not arrays:
        held = "labels but no inputs" if labels is not None else "no input arrays"
        raise EngineError(f"The dataset holds {held}; name the input array `x`. {_SAVE_HINT}")
    layout = manifest or Layout()
    layout.check_names(arrays, f"`{MANIFEST}` manifest")
    arrays, layout = _with_recipe(arrays, layout, sample_axis, constants)
    return Dataset(arrays, labels, layout=layout)


def _with_recipe(
    arrays: Mapping[str, np.ndarray],
    layout: Layout,
    sample_axis: Mapping[str, int] | None,
    constants: Mapping[str, Any] | None,
) -> tuple[dict[str, np.ndarray], Layout]:
    inputs = dict(arrays)
    for name, value in (constants or {}).items():
        inputs[name] = constant_array(name, value)
    recipe = Layout(dict(sample_axis or {}), frozenset(constants or {}))
    recipe.check_names(inputs, "recipe's evaluate.sample_axis / evaluate.constants")
    return inputs, layout.overridden_by(recipe)


def _take(arr: np.ndarray, index: np.ndarray | slice, axis: int | None) -> np.ndarray:
    if axis is None:
        return arr
    if isinstance(index, slice):
        return arr[(slice(None),) * axis + (index,)]
    return np.take(arr, index, axis=axis)


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


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], Layout | None]:
    """The arrays, and the layout the archive's manifest declares (None without one)."""
    manifest = None
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
            if notes := [m for m in members if m.filename == f"{MANIFEST}.npy"]:
                manifest = parse_manifest(read_manifest(archive, notes[0]))
            headers = [read_array_header(archive, m) for m in members if m not in notes]
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
    return arrays, manifest


def _labels(name: str, arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise EngineError(
            f"Labels {name!r} must be a 1-D integer array of class ids, got {arr.dtype} with "
            f"shape {list(arr.shape)}."
        )
    if arr.size and int(arr.min()) < 0:
        raise EngineError(f"Labels {name!r} must be class ids >= 0; found {int(arr.min())}.")
    return arr.astype(np.int64, copy=False)


def _fit(t: TensorInfo, arr: np.ndarray, axis: int, want: int | None) -> np.ndarray:
    """Check one sample array against a model input and cast it to the input's dtype; its
    samples (on `axis`) move to the input's batch axis `want` when the model names one."""
    arr = _cast(t, arr, constant=False)
    if t.rank_known:
        if arr.ndim != len(t.shape):
            raise EngineError(
                f"Dataset array for input {t.name!r} has shape {list(arr.shape)} ({arr.ndim} "
                f"dims), but the input has {len(t.shape)} dims ({_fmt(t.shape)}); "
                + (
                    "the first dim is the sample axis."
                    if axis == 0
                    else f"axis {axis} holds samples."
                )
            )
        batch = axis if want is None else want
        model_dims = [(i, d) for i, d in enumerate(t.shape) if i != batch]
        sample_dims = [d for i, d in enumerate(arr.shape) if i != axis]
        for (i, dim), size in zip(model_dims, sample_dims, strict=True):
            if is_fixed(dim) and dim != size:
                where = "" if axis == batch == 0 else f" (samples on axis {axis}, fed on {batch})"
                raise EngineError(
                    f"Dataset array for input {t.name!r} has shape {list(arr.shape)}{where}, but "
                    f"the model fixes dim {i} at {dim} ({_fmt(t.shape)})."
                )
        if want is not None and want != axis:
            arr = np.moveaxis(arr, axis, want)
    return np.asarray(arr, order="C")


def _fit_constant(t: TensorInfo, arr: np.ndarray) -> np.ndarray:
    """A constant is fed as it is: the input's whole shape, every fixed dim matching."""
    arr = _cast(t, arr, constant=True)
    if t.rank_known and (
        arr.ndim != len(t.shape)
        or any(is_fixed(d) and d != s for d, s in zip(t.shape, arr.shape, strict=True))
    ):
        raise EngineError(
            f"The constant for input {t.name!r} has shape {list(arr.shape)}, but the model takes "
            f"{_fmt(t.shape)}; a constant is fed as it is with every batch."
        )
    return np.asarray(arr, order="C")


def _cast(t: TensorInfo, arr: np.ndarray, *, constant: bool) -> np.ndarray:
    """`arr` as the input's dtype where no value changes. Constants (a recipe's numbers)
    may also go from int to float."""
    want = np.dtype(t.dtype)
    got = arr.dtype
    if got == want:
        return arr
    same_kind = (got.kind == want.kind == "f") or (got.kind in "iu" and want.kind in "iu")
    if constant and want.kind == "f" and got.kind in "iub":
        same_kind = True
    if constant and want.kind in "iu" and got.kind == "f" and np.all(np.mod(arr, 1) == 0):
        arr, same_kind = arr.astype(np.int64), True
    if not same_kind or (want.kind in "iu" and not _ints_fit(arr, want)):
        what = "The constant" if constant else "Dataset array"
        raise EngineError(
            f"{what} for input {t.name!r} has dtype {got}, but the model wants {want}. "
            f"Save it as {want}."
        )
    return arr.astype(want)


def _ints_fit(arr: np.ndarray, want: np.dtype) -> bool:
    if arr.size == 0:
        return True
    info = np.iinfo(want)
    return info.min <= int(arr.min()) and int(arr.max()) <= info.max


def _fmt(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
