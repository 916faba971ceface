"""Top-1 / top-5 accuracy of the original and the compressed model against class labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.report import Accuracy


@dataclass
class _Hits:
    top1: int = 0
    top5: int = 0


@dataclass
class AccuracyCounter:
    """Accumulates top-k hits of two models' scores ([N, C] logits or probabilities)."""

    output: str
    samples: int = 0
    classes: int | None = None
    original: _Hits = field(default_factory=_Hits)
    result: _Hits = field(default_factory=_Hits)
    # Why accuracy could not be scored (e.g. not a classifier); the run goes on without it.
    skipped: str | None = None

    def add(self, original: np.ndarray, result: np.ndarray, labels: np.ndarray) -> None:
        if self.skipped is not None:
            return
        if original.ndim != 2 or original.shape[1] < 2:
            self.skipped = (
                f"The dataset has labels, but the model's first output {self.output!r} has "
                f"shape {list(original.shape)}, not [samples, classes], so accuracy was not "
                "measured."
            )
            return
        self.classes = int(original.shape[1])
        if labels.size and int(labels.max()) >= self.classes:
            raise EngineError(
                f"A label is {int(labels.max())}, but output {self.output!r} has only "
                f"{self.classes} classes (ids 0..{self.classes - 1})."
            )
        for hits, scores in ((self.original, original), (self.result, result)):
            hits.top1 += int((scores.argmax(axis=1) == labels).sum())
            if self.classes > 5:
                top5 = np.argpartition(-scores, 5, axis=1)[:, :5]
                hits.top5 += int((top5 == labels[:, None]).any(axis=1).sum())
        self.samples += int(labels.shape[0])

    def summary(self) -> Accuracy | None:
        if self.samples == 0 or self.skipped is not None:
            return None
        n = self.samples
        top5 = self.classes is not None and self.classes > 5
        o1, r1 = self.original.top1 / n, self.result.top1 / n
        return Accuracy(
            output=self.output,
            samples=n,
            classes=self.classes or 0,
            original_top1=o1,
            result_top1=r1,
            original_top5=self.original.top5 / n if top5 else None,
            result_top5=self.result.top5 / n if top5 else None,
            drop_points=(o1 - r1) * 100.0,
        )
