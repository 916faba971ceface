"""How closely a compressed model's outputs follow the original's on the same inputs.

Statistics are accumulated batch by batch (in float64) so that many samples of large
outputs never have to sit in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.measure.runtime import adapt_feed
from compress_engine.report import Fidelity, OutputFidelity

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class _Acc:
    """Running sums for one output."""

    name: str
    count: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    dot: float = 0.0
    norm_a: float = 0.0
    norm_b: float = 0.0
    top1_rows: int = 0
    top1_equal: int = 0
    top1_possible: bool = True
    finite: bool = True

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            raise EngineError(
                f"The compressed model's output {self.name!r} has shape {list(got.shape)}, "
                f"but the original's has {list(ref.shape)}."
            )
        a = np.asarray(ref, dtype=np.float64).ravel()
        b = np.asarray(got, dtype=np.float64).ravel()
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            self.finite = False
        if a.size:
            diff = np.abs(a - b)
            self.max_abs = max(self.max_abs, float(diff.max()))
            self.sum_abs += float(diff.sum())
            self.dot += float(a @ b)
            self.norm_a += float(a @ a)
            self.norm_b += float(b @ b)
            self.count += a.size
        # Classification-style output: [N, C] with several classes.
        if ref.ndim == 2 and ref.shape[1] > 1:
            self.top1_rows += ref.shape[0]
            self.top1_equal += int((ref.argmax(axis=1) == got.argmax(axis=1)).sum())
        else:
            self.top1_possible = False

    def result(self) -> OutputFidelity:
        if not self.finite or self.count == 0:
            return OutputFidelity(
                name=self.name, max_abs_diff=None, mean_abs_diff=None, cosine_similarity=None,
                top1_agreement=self._top1(),
            )  # fmt: skip
        return OutputFidelity(
            name=self.name,
            max_abs_diff=self.max_abs,
            mean_abs_diff=self.sum_abs / self.count,
            cosine_similarity=_cosine(self.dot, self.norm_a, self.norm_b),
            top1_agreement=self._top1(),
        )

    def _top1(self) -> float | None:
        if not self.top1_possible or self.top1_rows == 0:
            return None
        return self.top1_equal / self.top1_rows


def _cosine(dot: float, norm_a: float, norm_b: float) -> float:
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0  # both all-zero: identical
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return max(-1.0, min(1.0, dot / math.sqrt(norm_a * norm_b)))


class OutputComparison:
    """Fidelity accumulated batch by batch from outputs already computed (by a run that
    serves another comparison too), one output at a time as in compare_outputs."""

    def __init__(self, names: list[str]) -> None:
        self._accs = [_Acc(name=n) for n in names]
        self._samples = 0

    def add(
        self, feed: Mapping[str, np.ndarray], ref: list[np.ndarray], got: list[np.ndarray]
    ) -> None:
        for acc, r, g in zip(self._accs, ref, got, strict=True):
            acc.add(np.asarray(r), np.asarray(g))
        first = next(iter(feed.values()), None)
        self._samples += int(first.shape[0]) if first is not None and first.ndim else 1

    def result(self) -> Fidelity:
        per_output = [a.result() for a in self._accs]
        return Fidelity(samples=self._samples, summary=per_output[0], per_output=per_output)


OnOutputs = Callable[[int, Mapping[str, np.ndarray], list[np.ndarray], list[np.ndarray]], None]


def compare_outputs(
    reference: onnxruntime.InferenceSession,
    candidate: onnxruntime.InferenceSession,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    total: int,
    progress: Callable[[float], None] | None = None,
    on_outputs: OnOutputs | None = None,
) -> Fidelity:
    """Run both sessions on every feed and compare each output.

    `total` is the number of feeds (for progress); samples are counted from the leading dim
    of the first input of each feed. on_outputs(index, feed, reference outputs, candidate
    outputs) sees every batch (e.g. to score accuracy in the same pass).
    """
    names = [o.name for o in reference.get_outputs()]
    comparison = OutputComparison(names)
    for i, feed in enumerate(feeds, start=1):
        feed = dict(feed)
        ref_out = [np.asarray(r) for r in reference.run(names, feed)]
        got_out = [np.asarray(g) for g in candidate.run(names, adapt_feed(candidate, feed))]
        if on_outputs is not None:
            on_outputs(i - 1, feed, ref_out, got_out)
        comparison.add(feed, ref_out, got_out)
        if progress is not None:
            progress(i / max(total, 1))
    return comparison.result()
