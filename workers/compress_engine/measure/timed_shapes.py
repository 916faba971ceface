"""The shapes a run times (and measures) a model at, where its inputs have free dimensions.

A free dim (a symbolic or unknown size other than the batch) is taken, in this order, from
evaluate.input_shapes (the CLI's --input-shape), from the dataset's samples, or else set to a
guess (measure.inputs.DEFAULT_DYNAMIC_DIM, or the first of LARGER_GUESSES the model runs
at) that the report names: a model timed on a 16x16
image while it serves 48x320 text lines would otherwise report a speed-up it never gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from compress_engine.measure.inputs import DEFAULT_DYNAMIC_DIM, LARGER_GUESSES, resolve_shapes
from compress_engine.tensors import TensorInfo

ShapeSource = Literal["model", "dataset", "input_shapes", "default"]


@dataclass
class TimedShapes:
    shapes: dict[str, list[int]]  # per input, at the batch size asked for
    sources: dict[str, ShapeSource]  # per input: what fixed its free dims
    # Free dims nothing fixed, per input: (axis, symbol or None).
    defaulted: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    guess: int = DEFAULT_DYNAMIC_DIM  # the size the defaulted dims got

    def default_note(self) -> str | None:
        """What a user should know when a free dim was guessed, and how to fix it."""
        if not self.defaulted:
            return None
        dims = [
            f"{_dim_name(axis, symbol)} of input {name!r}"
            for name, free in self.defaulted.items()
            for axis, symbol in free
        ]
        smaller = (
            ""
            if self.guess == DEFAULT_DYNAMIC_DIM
            else " (the model does not run at "
            + " or ".join(str(g) for g in (DEFAULT_DYNAMIC_DIM, *LARGER_GUESSES) if g < self.guess)
            + ")"
        )
        examples = " ".join(
            f"--input-shape {name}={_with_placeholders(self.shapes[name], free)}"
            for name, free in self.defaulted.items()
        )
        return (
            f"Latency was timed at {self.guess} for free dim{'s' * (len(dims) > 1)} "
            f"{', '.join(dims)}: neither the dataset nor evaluate.input_shapes sets "
            f"{'them' if len(dims) > 1 else 'it'}"
            f"{smaller}, and speed at that size need not hold at "
            f"yours. Pass {examples} (evaluate.input_shapes in a recipe) to time your real "
            "shape."
        )


def timed_shapes(
    inputs: Sequence[TensorInfo],
    batch_size: int,
    overrides: Mapping[str, Sequence[int]] | None,
    sample: Mapping[str, np.ndarray] | None,
    constants: Mapping[str, Any] | None = None,
    guess: int = DEFAULT_DYNAMIC_DIM,
) -> TimedShapes:
    """Concrete shapes per input: the user's override, else the model's fixed dims with the
    batch and, for free dims, the size they have in `sample` (a feed of the dataset's first
    samples, laid out as the model takes it), else the default guess. An input in
    `constants` (evaluate.constants) has its value's shape."""
    overrides = dict(overrides or {})
    shapes = resolve_shapes(inputs, batch_size, overrides, constants, guess)
    # The batch rule lives in resolve_shapes: a dim that follows the batch size is a batch dim.
    other = resolve_shapes(inputs, batch_size + 1, overrides, constants, guess)
    sources: dict[str, ShapeSource] = {}
    defaulted: dict[str, list[tuple[int, str | None]]] = {}
    for t in inputs:
        if t.name in overrides:
            sources[t.name] = "input_shapes"
            continue
        if t.name in (constants or {}):
            sources[t.name] = "model"
            continue
        shape = shapes[t.name]
        free = [
            i
            for i, dim in enumerate(t.shape)
            if not (isinstance(dim, int) and dim > 0) and shape[i] == other[t.name][i]
        ]
        arr = None if sample is None else sample.get(t.name)
        if not free:
            sources[t.name] = "model"
        elif arr is not None and arr.ndim == len(shape):
            for i in free:
                shape[i] = int(arr.shape[i])
            sources[t.name] = "dataset"
        else:
            sources[t.name] = "default"
            defaulted[t.name] = [
                (i, t.shape[i] if isinstance(t.shape[i], str) else None) for i in free
            ]
    return TimedShapes(shapes=shapes, sources=sources, defaulted=defaulted, guess=guess)


def _dim_name(axis: int, symbol: str | None) -> str:
    return f"{symbol!r} (dim {axis})" if symbol else f"dim {axis}"


def _with_placeholders(shape: Sequence[int], free: Sequence[tuple[int, str | None]]) -> str:
    named = {axis: f"<{symbol or f'dim{axis}'}>" for axis, symbol in free}
    return "x".join(named.get(i, str(d)) for i, d in enumerate(shape))
