"""Reads the structure of an uploaded `.npz` from array headers only: no pickles, no data
loaded into memory, object arrays refused."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_NAMES = ("y", "labels")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")
MAX_ARRAYS = 64
# numpy.savez writes format 1.0, or 2.0 for very large headers; 3.0 (utf-8 field names) is
# rare enough to refuse with a clear message.
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class NpzRejected(Exception):
    pass


@dataclass(frozen=True)
class NpzSummary:
    arrays: dict[str, dict]  # name -> {"shape": [...], "dtype": "float32"}
    samples: int
    label_array: str


def summarize_npz(path: Path) -> NpzSummary:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NpzRejected(
            "The file is not a NumPy .npz archive. Save your arrays with "
            "numpy.savez(path, x=inputs, y=labels)."
        ) from exc
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise NpzRejected("The .npz archive holds no arrays.")
        if len(members) > MAX_ARRAYS:
            raise NpzRejected(f"The .npz archive holds more than {MAX_ARRAYS} arrays.")
        arrays = {name: header for name, header in (_header(archive, m) for m in members)}
    return _validate(arrays)


def _header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> tuple[str, dict]:
    if not member.filename.endswith(".npy"):
        raise NpzRejected(f"{member.filename!r} is not a .npy array; only arrays are accepted.")
    name = member.filename[: -len(".npy")]
    if not _NAME_RE.match(name):
        raise NpzRejected(f"Array name {name!r} is not allowed.")
    with archive.open(member) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _fortran, dtype = read_header(handle)
        except ValueError as exc:
            raise NpzRejected(f"Array {name!r} is not a valid .npy array: {exc}") from exc
    if dtype.hasobject:
        raise NpzRejected(
            f"Array {name!r} holds Python objects (dtype {dtype}); only numeric arrays are "
            "accepted (they would need unpickling, which ModelPress never does)."
        )
    if dtype.kind not in "biuf":
        raise NpzRejected(f"Array {name!r} has dtype {dtype}; only numbers and booleans.")
    return name, {"shape": [int(d) for d in shape], "dtype": dtype.name}


def _validate(arrays: dict[str, dict]) -> NpzSummary:
    label = next((n for n in LABEL_NAMES if n in arrays), "")
    inputs = {n: a for n, a in arrays.items() if n not in LABEL_NAMES}
    if not inputs:
        raise NpzRejected("The .npz holds labels but no inputs; name the input array `x`.")
    counts = {n: (a["shape"][0] if a["shape"] else None) for n, a in arrays.items()}
    if None in counts.values():
        scalars = [n for n, c in counts.items() if c is None]
        raise NpzRejected(f"Arrays must have a sample dimension first; {scalars} are scalars.")
    if len(set(counts.values())) != 1:
        raise NpzRejected(f"Every array needs the same number of samples; got {counts}.")
    samples = next(iter(counts.values()))
    if samples == 0:
        raise NpzRejected("The dataset has no samples.")
    if label:
        labels = arrays[label]
        if len(labels["shape"]) != 1 or np.dtype(labels["dtype"]).kind not in "iu":
            raise NpzRejected(
                f"Labels {label!r} must be a 1-D integer array of class ids, got "
                f"{labels['dtype']} with shape {labels['shape']}."
            )
    return NpzSummary(arrays=arrays, samples=samples, label_array=label)
