"""Where the samples lie: in a dataset's arrays (the `.npz` manifest and the recipe's
evaluate.sample_axis / evaluate.constants) and in a model's inputs (its batch axis).

Most datasets hold one sample per index of each array's first axis. A stateful model needs
more: `state [2, batch, 128]` carries its batch on axis 1, and a scalar `sr` is the same for
every sample. A dataset says so in a small JSON manifest stored as a string array named
MANIFEST inside the `.npz` (never unpickled: `np.load(allow_pickle=False)` reads it):

    numpy.savez(path, input=x, state=s, sr=np.int64(16000),
                __modelpress__=json.dumps({"sample_axis": {"state": 1}}))

0-d arrays are constants by themselves (a scalar cannot hold samples); `"constants": [...]`
names other arrays fed as they are to every batch. The upload check (dataset_info) and the
loader (data) count samples with the same function, so both accept the same files.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.errors import EngineError, short_message
from compress_engine.tensors import TensorInfo

MANIFEST = "__modelpress__"
# numpy.savez writes format 1.0, or 2.0 for very large headers; 3.0 (UTF-8 field names, for
# structured dtypes, which datasets cannot use anyway) is refused.
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
MAX_MANIFEST_CHARS = 65_536
MANIFEST_KEYS = ("version", "sample_axis", "constants")
MANIFEST_HINT = (
    f"Save it as a JSON string: numpy.savez(path, ..., {MANIFEST}=json.dumps("
    '{"sample_axis": {"state": 1}, "constants": ["sr"]})).'
)
LAYOUT_HINT = (
    f"Name the sample axis of arrays whose samples are not on axis 0 in the dataset's "
    f"`{MANIFEST}` manifest (or evaluate.sample_axis, e.g. {{state: 1}}), and the arrays fed "
    "as they are to every batch under its `constants` (0-d arrays are constants already)."
)


@dataclass(frozen=True)
class Layout:
    """Per array: the axis its samples lie on (0 unless named), or fed as-is (a constant)."""

    sample_axis: Mapping[str, int] = field(default_factory=dict)
    constants: frozenset[str] = frozenset()

    def axis(self, name: str, ndim: int) -> int | None:
        """The sample axis of array `name` of `ndim` dims; None for a constant."""
        if name in self.constants or ndim == 0:
            return None
        axis = self.sample_axis.get(name, 0)
        return axis + ndim if axis < 0 else axis

    def overridden_by(self, other: Layout) -> Layout:
        """This layout with `other`'s word taking precedence for every array it names."""
        axes = {n: a for n, a in self.sample_axis.items() if n not in other.constants}
        axes.update(other.sample_axis)
        constants = (self.constants - set(other.sample_axis)) | other.constants
        return Layout(axes, frozenset(constants))

    def renamed(self, old: str, new: str) -> Layout:
        axes = {new if n == old else n: a for n, a in self.sample_axis.items()}
        return Layout(axes, frozenset(new if n == old else n for n in self.constants))

    def check_names(self, names: Iterable[str], source: str) -> None:
        """EngineError when the layout (from `source`) names arrays that are not there."""
        names = set(names)
        unknown = sorted((set(self.sample_axis) | self.constants) - names)
        if unknown:
            raise EngineError(
                f"The {source} names {', '.join(map(repr, unknown))}, but the dataset's arrays "
                f"are {', '.join(map(repr, sorted(names)))}."
            )
        both = sorted(set(self.sample_axis) & self.constants)
        if both:
            raise EngineError(
                f"The {source} gives {', '.join(map(repr, both))} a sample axis and calls it a "
                "constant; a constant has no samples: keep one."
            )


def parse_manifest(text: str) -> Layout:
    """The layout a manifest's JSON text declares; EngineError naming what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise EngineError(
            f"The dataset's `{MANIFEST}` manifest is not valid JSON ({short_message(exc, 120)}). "
            + MANIFEST_HINT
        ) from None
    if not isinstance(raw, dict):
        raise EngineError(
            f"The dataset's `{MANIFEST}` manifest must be a JSON object. {MANIFEST_HINT}"
        )
    unknown = sorted(set(raw) - set(MANIFEST_KEYS))
    if unknown:
        raise EngineError(
            f"The dataset's `{MANIFEST}` manifest has unknown keys {unknown}; it may hold "
            f"{', '.join(MANIFEST_KEYS)}."
        )
    if raw.get("version", 1) != 1:
        raise EngineError(f"The dataset's `{MANIFEST}` manifest has version {raw['version']!r}; 1.")
    axes = raw.get("sample_axis", {})
    if not isinstance(axes, dict) or not all(
        isinstance(a, int) and not isinstance(a, bool) for a in axes.values()
    ):
        raise EngineError(
            f'The manifest\'s "sample_axis" must map array names to axes, e.g. {{"state": 1}}; '
            f"got {axes!r}."
        )
    constants = raw.get("constants", [])
    if not isinstance(constants, list) or not all(isinstance(c, str) for c in constants):
        raise EngineError(
            f'The manifest\'s "constants" must list array names, e.g. ["sr"]; got {constants!r}.'
        )
    return Layout(dict(axes), frozenset(constants))


def manifest_json(
    sample_axis: Mapping[str, int] | None = None, constants: Sequence[str] = ()
) -> str:
    """The manifest text for numpy.savez(..., __modelpress__=manifest_json(...))."""
    return json.dumps(
        {"version": 1, "sample_axis": dict(sample_axis or {}), "constants": list(constants)}
    )


def read_manifest(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> str:
    """The manifest member's JSON text: a string array checked from its header before its
    (bounded) data is read, with allow_pickle=False."""
    try:
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            reader = NPY_HEADER_READERS.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = reader(handle)
            if dtype.kind != "U" or math.prod(shape) != 1:
                raise EngineError(
                    f"The dataset's `{MANIFEST}` member must be one string, not {dtype} of "
                    f"shape {list(shape)}. {MANIFEST_HINT}"
                )
            if dtype.itemsize // 4 > MAX_MANIFEST_CHARS:
                raise EngineError(
                    f"The dataset's `{MANIFEST}` manifest is over {MAX_MANIFEST_CHARS:,} "
                    "characters."
                )
        with archive.open(member) as handle:
            value = np.lib.format.read_array(handle, allow_pickle=False)
    except ZIP_ERRORS as exc:
        raise EngineError(
            f"The dataset's `{MANIFEST}` manifest cannot be read: {short_message(exc, 200)}"
        ) from None
    return str(value.reshape(()).item())


def sample_count(
    shapes: Mapping[str, Sequence[int]], layout: Layout, labels: tuple[str, int] | None = None
) -> int:
    """The samples every non-constant array (and the labels, `(name, count)`) holds along its
    sample axis; EngineError when an axis is out of range or the counts differ."""
    counts: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, shape in shapes.items():
        axis = layout.axis(name, len(shape))
        if axis is None:
            continue
        if not 0 <= axis < len(shape):
            raise EngineError(
                f"The sample axis of {name!r} is {layout.sample_axis[name]}, but the array has "
                f"{len(shape)} dims (shape {list(shape)}); axes run from 0 to {len(shape) - 1}."
            )
        counts[name] = int(shape[axis])
        where[name] = f"{counts[name]} on axis {axis}"
    if not counts:
        raise EngineError(
            "Every array of the dataset is a constant (0-d, or named under `constants`); at "
            "least one array needs samples."
        )
    if labels is not None:
        counts[labels[0]] = labels[1]
        where[labels[0]] = f"{labels[1]} labels"
    if len(set(counts.values())) != 1:
        raise EngineError(
            f"Every dataset array needs the same number of samples; got {where}. {LAYOUT_HINT}"
        )
    return next(iter(counts.values()))


# --- a model's batch axis -------------------------------------------------------------------


def is_fixed(dim: object) -> TypeGuard[int]:
    """A dim of known size (ONNX writes 0 or -1 for some unknown ones)."""
    return isinstance(dim, int) and dim > 0


def batch_symbols(inputs: Sequence[TensorInfo]) -> set[str]:
    """Symbols that stand for the batch: one that leads some input's shape, or one named like
    a batch (`batch`, `batch_size`, ...) wherever it stands, so `state [2, batch, 128]`
    shares `batch` with `input [batch, 512]`."""
    symbols: set[str] = set()
    for t in inputs:
        if t.shape and isinstance(t.shape[0], str):
            symbols.add(t.shape[0])
        symbols.update(d for d in t.shape if isinstance(d, str) and "batch" in d.lower())
    return symbols


def batch_axes(
    inputs: Sequence[TensorInfo], symbols: set[str] | None = None
) -> dict[str, int | None]:
    """Per input, the axis that holds the batch: where a batch symbol stands, else axis 0
    (dynamic or fixed); None for scalars and inputs of unknown rank. `symbols` defaults to
    the batch symbols of `inputs` themselves (outputs pass their model's inputs' symbols)."""
    symbols = batch_symbols(inputs) if symbols is None else symbols
    axes: dict[str, int | None] = {}
    for t in inputs:
        if not t.rank_known or not t.shape:
            axes[t.name] = None
            continue
        axes[t.name] = next((i for i, d in enumerate(t.shape) if d in symbols), 0)
    return axes


def declared_batch_axis(t: TensorInfo, axes: Mapping[str, int | None]) -> int | None:
    """The input's batch axis when its shape says so (a dim there is free), else None."""
    axis = axes.get(t.name)
    if axis is None or is_fixed(t.shape[axis]):
        return None
    return axis
