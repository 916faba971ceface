"""Seeded random inputs built from a model's declared inputs.

Without a dataset these are what latency and fidelity are measured on; the same seed gives
the same tensors for the original and the compressed model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.tensors import TensorInfo

# Value for symbolic dims other than the batch (sequence length, image side, ...).
DEFAULT_DYNAMIC_DIM = 16
INT_HIGH = 100  # ints drawn from [0, 100): valid ids for most vocabularies and index inputs

_SUPPORTED = {
    "float16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "bool",
}  # fmt: skip


def resolve_shapes(
    inputs: Sequence[TensorInfo],
    batch_size: int,
    overrides: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, list[int]]:
    """Concrete shape per input.

    An override is used verbatim (its fixed dims must agree with the model). Otherwise a
    dynamic first dim is the batch, and other dynamic dims get DEFAULT_DYNAMIC_DIM; a symbol
    shared by several inputs gets one value so that e.g. input_ids and attention_mask match.
    """
    overrides = dict(overrides or {})
    names = [t.name for t in inputs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise EngineError(
            f"evaluate.input_shapes names {', '.join(map(repr, unknown))}, but the model's "
            f"inputs are {', '.join(map(repr, names))}."
        )
    symbols: dict[str, int] = {}
    # Symbols that lead some input's shape are batch dims.
    for t in inputs:
        if t.name not in overrides and t.shape and isinstance(t.shape[0], str):
            symbols.setdefault(t.shape[0], batch_size)
    shapes: dict[str, list[int]] = {}
    for t in inputs:
        if t.dtype not in _SUPPORTED:
            raise EngineError(
                f"Input {t.name!r} has type {t.dtype}, which random test inputs cannot be made "
                "for yet."
            )
        if t.name in overrides:
            shapes[t.name] = _checked_override(t, list(overrides[t.name]))
            continue
        if not t.rank_known:
            raise EngineError(
                f"Input {t.name!r} has no declared shape; give one in evaluate.input_shapes."
            )
        shape: list[int] = []
        for i, dim in enumerate(t.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif isinstance(dim, str):
                shape.append(symbols.setdefault(dim, DEFAULT_DYNAMIC_DIM))
            else:  # unknown or 0/-1: batch if leading, else the default
                shape.append(batch_size if i == 0 else DEFAULT_DYNAMIC_DIM)
        shapes[t.name] = shape
    return shapes


def _checked_override(t: TensorInfo, shape: list[int]) -> list[int]:
    if t.rank_known and len(shape) != len(t.shape):
        raise EngineError(
            f"evaluate.input_shapes[{t.name!r}] has {len(shape)} dims but the input has "
            f"{len(t.shape)} ({_fmt(t.shape)})."
        )
    for i, (want, got) in enumerate(zip(t.shape, shape, strict=False)):
        if isinstance(want, int) and want > 0 and want != got:
            raise EngineError(
                f"evaluate.input_shapes[{t.name!r}] sets dim {i} to {got}, but the model fixes "
                f"it at {want} ({_fmt(t.shape)})."
            )
    return shape


def _fmt(shape: Sequence[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def batch_dim_dynamic(t: TensorInfo) -> bool:
    """True when the input's leading dim is not fixed (so any batch size can be fed)."""
    return bool(t.shape) and not (isinstance(t.shape[0], int) and t.shape[0] > 0)


def random_feed(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One feed dict: floats ~ N(0, 1), ints uniform in [0, 100), bools fair coin flips."""
    feed: dict[str, np.ndarray] = {}
    for t in inputs:
        shape = tuple(shapes[t.name])
        dtype = np.dtype(t.dtype)
        if dtype.kind == "f":
            arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "iu":
            high = min(INT_HIGH, int(np.iinfo(dtype).max) + 1)
            arr = rng.integers(0, high, size=shape, dtype=dtype)
        else:  # bool
            arr = rng.random(shape) < 0.5
        feed[t.name] = arr
    return feed


def fidelity_batches(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]], samples: int
) -> list[dict[str, list[int]]]:
    """Shapes of the feeds that together hold `samples` samples.

    With a dynamic batch every feed but the last has the measured batch size; with a fixed
    leading dim each feed holds that many samples (rounded up to whole feeds).
    """
    first = next((t for t in inputs if t.shape), None)
    if first is None:  # scalars only: one sample per run
        return [dict(shapes) for _ in range(samples)]
    per_feed = shapes[first.name][0]
    dynamic = {t.name for t in inputs if batch_dim_dynamic(t)}
    out: list[dict[str, list[int]]] = []
    left = samples
    while left > 0:
        n = min(per_feed, left) if first.name in dynamic else per_feed
        batch_shapes = {}
        for t in inputs:
            s = list(shapes[t.name])
            if t.name in dynamic and s and s[0] == per_feed:
                s[0] = n
            batch_shapes[t.name] = s
        out.append(batch_shapes)
        left -= n
    return out
