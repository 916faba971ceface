"""Where each stage of a compress() run sits in its overall progress (0..1).

The pipeline reports progress against this layout and the catalog's stage plan reads the
same layout, so the web's live page and the engine cannot drift apart. A step that trains
for epochs gets most of the bar (it takes most of the time); the other steps share what one
step had before. Imports nothing heavy: the web lists stages without torch or onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

# Relative weights of the fixed stages; they sum to 0.85 and the steps add theirs.
_MEASURE_ORIGINAL = 0.35
_VALIDATE = 0.05
_MEASURE_RESULT = 0.20
_FIDELITY = 0.07
_EXPORT = 0.15
_WRITE = 0.03
# All the steps that do not train share this weight; each step that trains adds its own.
LIGHT_STEPS = 0.15
TRAINING_STEP = 1.5


@dataclass(frozen=True)
class Layout:
    """Where each stage of one run starts, as fractions of the run's progress."""

    measure_original: float
    steps: tuple[tuple[float, float], ...]  # each step's (start, end)
    validate: float
    measure_result: float
    fidelity: float
    export: float
    write: float


def layout(trains: Sequence[bool]) -> Layout:
    """The layout of a run whose steps train (True) or not, in recipe order."""
    light = sum(1 for t in trains if not t)
    steps = [TRAINING_STEP if t else LIGHT_STEPS / light for t in trains] or [LIGHT_STEPS]
    weights = [
        _MEASURE_ORIGINAL,
        *steps,
        _VALIDATE,
        _MEASURE_RESULT,
        _FIDELITY,
        _EXPORT,
        _WRITE,
    ]
    total = sum(weights)
    # Rounded: a plan shown on a page reads 0.5, not 0.49999999999999994.
    starts = [0.0, *(round(w / total, 6) for w in accumulate(weights))][: len(weights)]
    n = len(steps)
    step_starts = starts[1 : 1 + n]
    step_ends = [*starts[2 : 1 + n], starts[1 + n]]
    validate, measure_result, fidelity, export, write = starts[1 + n :]
    return Layout(
        measure_original=0.0,
        steps=tuple(zip(step_starts, step_ends, strict=True)),
        validate=validate,
        measure_result=measure_result,
        fidelity=fidelity,
        export=export,
        write=write,
    )
