"""Reads the structure of an uploaded `.npz` from array headers only: no pickles, no data
loaded into memory, object arrays refused. The header checks are the engine's
(compress_engine.data.read_array_header), so an upload accepted here is one a job can load."""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress_engine.archives import ZIP_ERRORS
from compress_engine.data import (
    LABEL_NAMES,
    MAX_ARRAYS,
    MAX_DATASET_BYTES,
    ArrayHeader,
    read_array_header,
)
from compress_engine.errors import EngineError

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")
# Dataset.samples is a PostgreSQL integer.
MAX_SAMPLES = 2**31 - 1


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
    except ZIP_ERRORS as exc:
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
        headers = [_header(archive, m) for m in members]
    total = sum(h.nbytes for h in headers)
    if total > MAX_DATASET_BYTES:
        # What a job could not load: the engine holds the whole dataset in memory.
        raise NpzRejected(
            f"The arrays hold {total / 1024**3:.1f} GiB; a dataset may hold at most "
            f"{MAX_DATASET_BYTES / 1024**3:.0f} GiB. Use a subset for calibration and evaluation."
        )
    arrays = {h.name: {"shape": list(h.shape), "dtype": h.dtype.name} for h in headers}
    return _validate(arrays)


def _header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> ArrayHeader:
    if not member.filename.endswith(".npy"):
        raise NpzRejected(f"{member.filename!r} is not a .npy array; only arrays are accepted.")
    name = member.filename[: -len(".npy")]
    if not _NAME_RE.match(name):
        raise NpzRejected(f"Array name {name!r} is not allowed.")
    # The engine's checks, so that an upload accepted here is one a job can load.
    try:
        return read_array_header(archive, member)
    except EngineError as exc:
        raise NpzRejected(str(exc)) from exc


def _validate(arrays: dict[str, dict]) -> NpzSummary:
    if all(n in arrays for n in LABEL_NAMES):
        raise NpzRejected("The .npz holds both `y` and `labels`; keep one label array.")
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
    if samples > MAX_SAMPLES:
        raise NpzRejected(f"The dataset has {samples:,} samples; at most {MAX_SAMPLES:,}.")
    if label:
        labels = arrays[label]
        if len(labels["shape"]) != 1 or np.dtype(labels["dtype"]).kind not in "iu":
            raise NpzRejected(
                f"Labels {label!r} must be a 1-D integer array of class ids, got "
                f"{labels['dtype']} with shape {labels['shape']}."
            )
    return NpzSummary(arrays=arrays, samples=samples, label_array=label)
