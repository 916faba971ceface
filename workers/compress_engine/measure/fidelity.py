"""How closely a compressed model's outputs follow the original's on the same inputs.

Per output: element differences and the global cosine, the task-aware agreement chosen from
the output's shape and values (measure/agreement.py), and one score per sample summarised as
a distribution (mean, worst, share below a floor), so a few dead samples cannot hide behind a
good average. Statistics are accumulated batch by batch (running sums in float64, one number
per sample) so that many samples of large outputs never have to sit in memory at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.configs import QualityFloor
from compress_engine.data_layout import batch_axes, batch_symbols
from compress_engine.errors import EngineError
from compress_engine.measure.agreement import Task, task_for
from compress_engine.measure.runtime import adapt_feed
from compress_engine.report import Fidelity, OutputFidelity, SampleSpread
from compress_engine.tensors import TensorInfo

if TYPE_CHECKING:
    import onnxruntime

# Below this a sample counts as broken unless the recipe's quality floor says otherwise.
DEFAULT_SAMPLE_FLOOR = QualityFloor().min_sample_score


@dataclass
class _Acc:
    """Running sums for one output."""

    name: str
    sample_floor: float = DEFAULT_SAMPLE_FLOOR
    count: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    sum_sq_diff: float = 0.0
    dot: float = 0.0
    norm_a: float = 0.0
    norm_b: float = 0.0
    ref_min: float = math.inf
    ref_max: float = -math.inf
    finite: bool = True
    task: Task | None = None

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            raise EngineError(
                f"The compressed model's output {self.name!r} has shape {list(got.shape)}, "
                f"but the original's has {list(ref.shape)}."
            )
        if self.task is None:
            self.task = task_for(self.name, ref)
        a = np.asarray(ref, dtype=np.float64)
        b = np.asarray(got, dtype=np.float64)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            self.finite = False
        if not self.finite or not a.size:
            return
        diff = np.abs(a - b).ravel()
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.sum_abs += float(diff.sum())
        self.sum_sq_diff += float(diff @ diff)
        self.dot += float(a.ravel() @ b.ravel())
        self.norm_a += float(a.ravel() @ a.ravel())
        self.norm_b += float(b.ravel() @ b.ravel())
        self.ref_min = min(self.ref_min, float(a.min()))
        self.ref_max = max(self.ref_max, float(a.max()))
        self.count += a.size
        self.task.add(a, b)

    def result(self) -> OutputFidelity:
        task = self.task or Task()
        shown = {
            "name": self.name,
            "kind": task.kind,
            "metric": task.metric,
            "metric_label": task.label,
        }
        if not self.finite or self.count == 0:
            return OutputFidelity(
                **shown, max_abs_diff=None, mean_abs_diff=None, cosine_similarity=None
            )
        cosine = _cosine(self.dot, self.norm_a, self.norm_b)
        agreement = task.agreement(cosine)
        spread = task.nominal_range or max(self.ref_max - self.ref_min, 0.0)
        return OutputFidelity(
            **shown,
            max_abs_diff=self.max_abs,
            mean_abs_diff=self.sum_abs / self.count,
            cosine_similarity=cosine,
            top1_agreement=agreement if task.kind == "class-scores" else None,
            agreement=agreement,
            relative_l2=_relative(math.sqrt(self.sum_sq_diff), math.sqrt(self.norm_a)),
            range_error=_relative(self.max_abs, spread),
            per_sample=_spread(task, self.sample_floor),
            **task.extras(),
        )


def _relative(error: float, scale: float) -> float | None:
    """error / scale; None when the scale is zero but the error is not."""
    if scale == 0.0:
        return 0.0 if error == 0.0 else None
    return error / scale


def _spread(task: Task, floor: float) -> SampleSpread | None:
    scores = task.all_scores()
    if not scores.size:
        return None
    return SampleSpread(
        score=task.sample_score,
        samples=int(scores.size),
        mean=float(scores.mean()),
        worst=float(scores.min()),
        floor=floor,
        below_floor=float((scores < floor).mean()),
    )


def _cosine(dot: float, norm_a: float, norm_b: float) -> float:
    if norm_a == 0.0 and norm_b == 0.0:
        return 1.0  # both all-zero: identical
    if norm_a == 0.0 or norm_b == 0.0:
        return 0.0
    return max(-1.0, min(1.0, dot / math.sqrt(norm_a * norm_b)))


class OutputComparison:
    """Fidelity accumulated batch by batch from outputs already computed (by a run that
    serves another comparison too), one output at a time as in compare_outputs."""

    def __init__(
        self,
        names: list[str],
        sample_floor: float = DEFAULT_SAMPLE_FLOOR,
        batch_axes: Sequence[int] | None = None,
    ) -> None:
        self._accs = [_Acc(name=n, sample_floor=sample_floor) for n in names]
        # Per output, the axis that holds the samples (state outputs such as
        # `[layers, batch, hidden]` keep theirs second); it is moved first before scoring.
        self._axes = list(batch_axes) if batch_axes is not None else [0] * len(names)
        self._samples = 0

    def add(
        self, feed: Mapping[str, np.ndarray], ref: list[np.ndarray], got: list[np.ndarray]
    ) -> None:
        for acc, axis, r, g in zip(self._accs, self._axes, ref, got, strict=True):
            r, g = np.asarray(r), np.asarray(g)
            if axis and r.ndim > axis and r.shape == g.shape:
                r, g = np.moveaxis(r, axis, 0), np.moveaxis(g, axis, 0)
            acc.add(r, g)
        first = next((v for v in feed.values() if np.ndim(v)), None)
        self._samples += int(first.shape[0]) if first is not None else 1

    def result(self) -> Fidelity:
        per_output = [a.result() for a in self._accs]
        return Fidelity(samples=self._samples, summary=per_output[0], per_output=per_output)


def output_batch_axes(session: onnxruntime.InferenceSession) -> list[int]:
    """Per output, the axis of the batch symbol the inputs declare (0 when none is named)."""

    def infos(args: Sequence[Any]) -> list[TensorInfo]:
        return [
            TensorInfo(
                name=a.name,
                dtype="float32",  # only the shape matters here
                shape=[d if isinstance(d, int | str) else None for d in (a.shape or [])],
            )
            for a in args
        ]

    get_inputs = getattr(session, "get_inputs", None)  # test doubles may not have it
    if get_inputs is None:
        return [0] * len(session.get_outputs())
    outputs = infos(session.get_outputs())
    axes = batch_axes(outputs, symbols=batch_symbols(infos(get_inputs())))
    return [axes[o.name] or 0 for o in outputs]


OnOutputs = Callable[[int, Mapping[str, np.ndarray], list[np.ndarray], list[np.ndarray]], None]


def compare_outputs(
    reference: onnxruntime.InferenceSession,
    candidate: onnxruntime.InferenceSession,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    total: int,
    progress: Callable[[float], None] | None = None,
    on_outputs: OnOutputs | None = None,
    sample_floor: float = DEFAULT_SAMPLE_FLOOR,
) -> Fidelity:
    """Run both sessions on every feed and compare each output.

    `total` is the number of feeds (for progress); samples are counted from the leading dim
    of the first input of each feed. on_outputs(index, feed, reference outputs, candidate
    outputs) sees every batch (e.g. to score accuracy in the same pass). A sample scoring
    below `sample_floor` counts as broken in each output's per-sample spread.
    """
    names = [o.name for o in reference.get_outputs()]
    comparison = OutputComparison(names, sample_floor, output_batch_axes(reference))
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
