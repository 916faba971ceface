"""Seeded random inputs built from a model's declared inputs.

Without a dataset these are what latency and fidelity are measured on; the same seed gives
the same tensors for the original and the compressed model. The batch lies on each input's
batch axis (data_layout.batch_axes: `state [2, batch, 128]` batches on axis 1), inputs named
in evaluate.constants get their value, and other scalars a fixed guess (scalar_guess) rather
than noise: a sample rate of 57 breaks models that a rate of 16000 runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from compress_engine.data import constant_for
from compress_engine.data_layout import batch_axes, batch_symbols, is_fixed
from compress_engine.errors import EngineError
from compress_engine.tensors import TensorInfo

# Value for symbolic dims other than the batch (sequence length, image side, ...).
DEFAULT_DYNAMIC_DIM = 16
# Larger guesses, tried in order when the model does not run at the one before: detectors and
# deep CNNs downsample by 32 or more and join branches of different strides (a YOLO head's
# Concat fails at 16x16), so a free image side needs a size they were built for.
LARGER_GUESSES = (64, 224, 320, 640)
INT_HIGH = 100  # ints drawn from [0, 100): valid ids for most vocabularies and index inputs
# Values for scalar inputs without a constant, by name: an integer rate (sr, sample_rate, fs)
# gets a common audio rate; any other scalar 1 (a count, a size, a scale, a step), never noise.
RATE_NAME = re.compile(r"(^|_)(sr|fs|hz|sample_?rate|sampling_?rate)$", re.IGNORECASE)
SAMPLE_RATE_GUESS = 16_000

_SUPPORTED = {
    "float16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "bool",
}  # fmt: skip


def resolve_shapes(
    inputs: Sequence[TensorInfo],
    batch_size: int,
    overrides: Mapping[str, Sequence[int]] | None = None,
    constants: Mapping[str, Any] | None = None,
    guess: int = DEFAULT_DYNAMIC_DIM,
) -> dict[str, list[int]]:
    """Concrete shape per input.

    An override is used verbatim (its fixed dims must agree with the model), a constant has
    its own shape. Otherwise the batch dim (a dynamic leading dim, or wherever a batch symbol
    stands) gets `batch_size`, and other dynamic dims `guess`; a symbol shared by
    several inputs gets one value so that e.g. input_ids and attention_mask match.
    """
    overrides = dict(overrides or {})
    constants = dict(constants or {})
    names = [t.name for t in inputs]
    for field, named in (("input_shapes", overrides), ("constants", constants)):
        unknown = sorted(set(named) - set(names))
        if unknown:
            raise EngineError(
                f"evaluate.{field} names {', '.join(map(repr, unknown))}, but the model's "
                f"inputs are {', '.join(map(repr, names))}."
            )
    symbols = dict.fromkeys(
        batch_symbols([t for t in inputs if t.name not in overrides]), batch_size
    )
    axes = batch_axes(inputs)
    shapes: dict[str, list[int]] = {}
    for t in inputs:
        if t.dtype not in _SUPPORTED:
            raise EngineError(
                f"Input {t.name!r} has type {t.dtype}, which random test inputs cannot be made "
                "for yet."
            )
        if t.name in constants:
            shapes[t.name] = list(constant_for(t, constants[t.name]).shape)
            continue
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
                shape.append(symbols.setdefault(dim, guess))
            else:  # unknown or 0/-1: batch if on the batch axis, else the default
                shape.append(batch_size if i == axes[t.name] else guess)
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


def batch_dim_free(t: TensorInfo, axis: int | None) -> bool:
    """True when the input's dim on its batch axis is not fixed."""
    return axis is not None and not is_fixed(t.shape[axis])


def scalar_guess(t: TensorInfo) -> Any:
    """The value a scalar input without a constant is fed (SAMPLE_RATE_GUESS for a rate)."""
    kind = np.dtype(t.dtype).kind
    if kind == "b":
        return False
    fits = kind in "iu" and np.iinfo(t.dtype).max >= SAMPLE_RATE_GUESS
    return SAMPLE_RATE_GUESS if fits and RATE_NAME.search(t.name) else 1


def guessed_scalars(
    inputs: Sequence[TensorInfo], constants: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Scalar inputs that random feeds give a guessed value (no constant names them)."""
    constants = constants or {}
    return {
        t.name: scalar_guess(t)
        for t in inputs
        if t.rank_known and not t.shape and t.name not in constants
    }


def guessed_scalars_note(
    inputs: Sequence[TensorInfo], constants: Mapping[str, Any] | None
) -> str | None:
    """The report's word on scalar inputs that random inputs fed a guessed value."""
    guesses = guessed_scalars(inputs, constants)
    if not guesses:
        return None
    fed = ", ".join(f"{n}={v}" for n, v in guesses.items())
    return (
        f"Scalar inputs without a value in evaluate.constants were fed a fixed guess ({fed}), "
        "not random values; set evaluate.constants to measure at the value your application "
        "uses."
    )


def random_input_hint(inputs: Sequence[TensorInfo], constants: Mapping[str, Any] | None) -> str:
    """What to change when a model does not run on random inputs: the guessed scalars by name
    (set evaluate.constants), else the shapes (evaluate.input_shapes)."""
    guesses = guessed_scalars(inputs, constants)
    if not guesses:
        return "set evaluate.input_shapes if these do not fit"
    fed = ", ".join(f"{n}={v}" for n, v in guesses.items())
    return (
        f"the scalar input{'s' * (len(guesses) > 1)} {', '.join(map(repr, guesses))} had no "
        f"value and got a guess ({fed}): give the value the model needs in evaluate.constants "
        f"(e.g. {{{next(iter(guesses))}: <value>}}), and set evaluate.input_shapes if the shapes "
        "do not fit"
    )


def random_feed(
    inputs: Sequence[TensorInfo],
    shapes: Mapping[str, Sequence[int]],
    rng: np.random.Generator,
    constants: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """One feed dict: floats ~ N(0, 1), ints uniform in [0, 100), bools fair coin flips;
    inputs in `constants` get that value, other scalars scalar_guess."""
    constants = constants or {}
    feed: dict[str, np.ndarray] = {}
    for t in inputs:
        shape = tuple(shapes[t.name])
        dtype = np.dtype(t.dtype)
        if t.name in constants:
            arr = constant_for(t, constants[t.name])
        elif t.rank_known and not t.shape:
            arr = np.asarray(scalar_guess(t)).astype(dtype)
        elif dtype.kind == "f":
            arr = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
        elif dtype.kind in "iu":
            high = min(INT_HIGH, int(np.iinfo(dtype).max) + 1)
            arr = rng.integers(0, high, size=shape, dtype=dtype)
        else:  # bool
            arr = rng.random(shape) < 0.5
        feed[t.name] = arr
    return feed


def batch_of(inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]]) -> int:
    """Samples per run: the batch-axis dim of the first input that has one."""
    axes = batch_axes(inputs)
    for t in inputs:
        axis = axes[t.name]
        if axis is not None and len(shapes[t.name]) > axis:
            return int(shapes[t.name][axis])
    return 1


def shapes_at(
    inputs: Sequence[TensorInfo],
    shapes: Mapping[str, Sequence[int]],
    batch: int,
    *,
    only_from: int | None = None,
) -> dict[str, list[int]]:
    """`shapes` with every free batch dim (on each input's batch axis) set to `batch`; with
    `only_from`, only those that are `only_from` now (an override may set them otherwise)."""
    axes = batch_axes(inputs)
    out = {}
    for t in inputs:
        s = list(shapes[t.name])
        axis = axes[t.name]
        if axis is None or not batch_dim_free(t, axis) or len(s) <= axis:
            pass  # no free batch dim: a fixed batch, a scalar, or an override without one
        elif only_from is None or s[axis] == only_from:
            s[axis] = batch
        out[t.name] = s
    return out


def fidelity_batches(
    inputs: Sequence[TensorInfo], shapes: Mapping[str, Sequence[int]], samples: int
) -> list[dict[str, list[int]]]:
    """Shapes of the feeds that together hold `samples` samples.

    With a dynamic batch every feed but the last has the measured batch size; with a fixed
    batch dim each feed holds that many samples (rounded up to whole feeds).
    """
    axes = batch_axes(inputs)
    first = next((t for t in inputs if axes[t.name] is not None), None)
    if first is None:  # scalars only: one sample per run
        return [{n: list(s) for n, s in shapes.items()} for _ in range(samples)]
    per_feed = batch_of(inputs, shapes)
    dynamic = batch_dim_free(first, axes[first.name])
    out: list[dict[str, list[int]]] = []
    left = samples
    while left > 0:
        n = min(per_feed, left) if dynamic else per_feed
        out.append(shapes_at(inputs, shapes, n, only_from=per_feed))
        left -= n
    return out
