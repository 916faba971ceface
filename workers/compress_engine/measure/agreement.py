"""Task-aware agreement: the figure that says whether a compressed output still does its job.

One global cosine hides both a head that died on a few samples and a probability map that is
almost all zeros, so every output is judged by what it looks like (decided once, from its
name, shape and the original's values in the first batch):

- class-scores, [N, C] with C > 1: top-1 agreement (and top-5); a sample scores the cosine
  of its centred scores.
- embedding, [N, D] named like one (embed, feature, descriptor, vector, hidden) or with
  unit-length rows: nearest-neighbour agreement; a sample scores the cosine of its vector.
- sequence, [N, T, C] with C > 1 and not a probability map: per-step argmax agreement (and
  the whole-sequence match); a sample scores the share of its steps that agree. A detector's
  [N, 4 + classes, anchors] (far more anchors than channels, rows not (log-)probabilities)
  is not a sequence: it is judged as values.
- dense-map, 3+ dims (not a sequence) with values in [0, 1]: IoU of the maps thresholded at
  0.5; a sample scores its own IoU.
- values, anything else (and outputs named like regressions: box, coord, regress,
  landmark, offset, delta, depth): cosine similarity; a sample scores the cosine of its
  values.

Each task keeps O(samples) numbers (one score per sample) plus running sums; embeddings keep
at most NN_MAX_SAMPLES rows for the neighbour search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Kind = Literal["class-scores", "embedding", "sequence", "dense-map", "values"]

# Output names that say "a vector to compare by distance", not "scores per class".
_EMBEDDING_NAME = re.compile(r"embed|feature|descriptor|vector|hidden", re.IGNORECASE)
# Output names that say "numbers to match", where an argmax means nothing (recurrent state
# and key/value caches included: they are carried to the next call, not read as scores).
_VALUES_NAME = re.compile(
    r"box|coord|regress|landmark|offset|delta|depth|state|cache|past|present", re.IGNORECASE
)
# [N, K, A] with A at least this many times K is read as K predictions per anchor.
PER_ANCHOR_RATIO = 8
# Probability maps are thresholded here (a detector's "object here" cut-off).
MAP_THRESHOLD = 0.5
# At most this many samples take part in the nearest-neighbour search of an embedding.
NN_MAX_SAMPLES = 512
_UNIT_NORM_TOLERANCE = 1e-3
# A sample whose two outputs differ by less than this share of the original's typical size
# scores 1: two (near-)zero vectors have no meaningful direction to compare.
_NEGLIGIBLE = 1e-6


def output_kind(name: str, ref: np.ndarray) -> Kind:
    """What the output looks like, from its name, shape and the original's values."""
    if not np.issubdtype(ref.dtype, np.floating) or ref.ndim < 2 or ref.size == 0:
        return "values"
    if not np.isfinite(ref).all():
        return "values"
    in_unit = float(ref.min()) >= 0.0 and float(ref.max()) <= 1.0
    if _VALUES_NAME.search(name):
        return "values"
    if ref.ndim == 2:
        if ref.shape[1] < 2:
            return "values"
        if _EMBEDDING_NAME.search(name) or _unit_rows(ref):
            return "embedding"
        return "class-scores"
    if ref.ndim == 3 and ref.shape[2] > 1:
        # Softmax rows also lie in [0, 1]; a probability map's rows need not sum to 1.
        sums_to_one = np.allclose(ref.sum(axis=2), 1.0, atol=1e-3)
        if _per_anchor(ref) and not (sums_to_one or _log_softmax_rows(ref)):
            # A detector's [N, 4 + classes, anchors] (YOLO heads): its "steps" would be the
            # box and class channels, so a per-step argmax means nothing there.
            return "values"
        if not in_unit or sums_to_one:
            return "sequence"
    return "dense-map" if in_unit else "values"


def _per_anchor(ref: np.ndarray) -> bool:
    """[N, K, A] with far more positions than channels (A >= PER_ANCHOR_RATIO * K): one
    column of K predictions per anchor, the layout of YOLO-style heads, not T steps of K
    scores each."""
    return ref.shape[2] >= PER_ANCHOR_RATIO * ref.shape[1]


def _log_softmax_rows(ref: np.ndarray) -> bool:
    """Rows that are log-probabilities (a CTC head's log-softmax): logsumexp ~ 0."""
    if float(ref.max()) > 1e-6:
        return False
    rows = ref.astype(np.float64)
    top = rows.max(axis=2, keepdims=True)
    lse = top[..., 0] + np.log(np.exp(rows - top).sum(axis=2))
    return bool(np.allclose(lse, 0.0, atol=1e-3))


def _unit_rows(ref: np.ndarray) -> bool:
    norms = np.linalg.norm(ref.astype(np.float64), axis=1)
    probabilities = bool((ref >= 0).all()) and np.allclose(ref.sum(axis=1), 1.0, atol=1e-3)
    return not probabilities and bool(np.all(np.abs(norms - 1.0) <= _UNIT_NORM_TOLERANCE))


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per row of two [N, M] float64 arrays; rows that barely differ score 1 and a
    zero row against a non-zero one scores 0."""
    dot = np.einsum("ij,ij->i", a, b)
    na = np.sqrt(np.einsum("ij,ij->i", a, a))
    nb = np.sqrt(np.einsum("ij,ij->i", b, b))
    scale = max(float(na.mean()) if na.size else 0.0, 1e-30)
    same = np.sqrt(np.einsum("ij,ij->i", a - b, a - b)) <= _NEGLIGIBLE * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((na > 0) & (nb > 0), dot / (na * nb), 0.0)
    return np.where(same, 1.0, np.clip(cos, -1.0, 1.0))


@dataclass
class Task:
    """Agreement of one output, accumulated batch by batch. Subclasses add their metric."""

    kind: Kind = "values"
    metric: str = "cosine"
    label: str = "cosine similarity"
    sample_score: str = "cosine"
    # The range errors are measured against: None = the original's observed min..max.
    nominal_range: float | None = None
    scores: list[np.ndarray] = field(default_factory=list)

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Both outputs of one batch, float64, same shape, finite."""
        self.scores.append(self.sample_scores(ref, got))

    def sample_scores(self, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
        n = ref.shape[0] if ref.ndim else 1
        if ref.size < 2 * n:
            return np.zeros(0)  # one number per sample: a direction means nothing
        return row_cosine(ref.reshape(n, -1), got.reshape(n, -1))

    def agreement(self, cosine: float | None) -> float | None:
        """The output's agreement, 0..1 (higher is better); `cosine` is the global one."""
        return None if cosine is None else max(0.0, cosine)

    def extras(self) -> dict[str, float | None]:
        return {}

    def all_scores(self) -> np.ndarray:
        return np.concatenate(self.scores) if self.scores else np.zeros(0)


@dataclass
class ClassScores(Task):
    kind: Kind = "class-scores"
    metric: str = "top1_agreement"
    label: str = "top-1 agreement"
    sample_score: str = "cosine of the centred scores"
    rows: int = 0
    top1: int = 0
    top5: int = 0

    def sample_scores(self, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
        # Softmax ignores a shift of a row, and log-probabilities share a large negative
        # offset that would keep a plain cosine high even for a dead head.
        return row_cosine(
            ref - ref.mean(axis=1, keepdims=True), got - got.mean(axis=1, keepdims=True)
        )

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        super().add(ref, got)
        first = ref.argmax(axis=1)
        self.top1 += int((first == got.argmax(axis=1)).sum())
        if ref.shape[1] > 5:
            top5 = np.argpartition(-got, 5, axis=1)[:, :5]
            self.top5 += int((top5 == first[:, None]).any(axis=1).sum())
        self.rows += ref.shape[0]

    def agreement(self, cosine: float | None) -> float | None:
        return self.top1 / self.rows if self.rows else None

    def extras(self) -> dict[str, float | None]:
        shown = self.rows and self.top5
        return {"top5_agreement": self.top5 / self.rows if shown else None}


@dataclass
class Sequence(Task):
    """Per-step argmax over the last axis of [N, T, C]; the whole-sequence match compares
    the CTC-style collapse (repeats merged, the blank dropped). The blank is taken to be
    the class the original predicts most often in the first batch."""

    kind: Kind = "sequence"
    metric: str = "step_agreement"
    label: str = "per-step argmax agreement"
    sample_score: str = "steps that agree"
    steps: int = 0
    equal_steps: int = 0
    sequences: int = 0
    equal_sequences: int = 0
    blank: int | None = None

    def sample_scores(self, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
        a, b = ref.argmax(axis=2), got.argmax(axis=2)
        if self.blank is None:
            self.blank = int(np.bincount(a.ravel()).argmax()) if a.size else 0
        same = a == b
        self.steps += same.size
        self.equal_steps += int(same.sum())
        self.sequences += a.shape[0]
        self.equal_sequences += sum(
            _collapse(x, self.blank) == _collapse(y, self.blank) for x, y in zip(a, b, strict=True)
        )
        return same.mean(axis=1) if same.shape[1] else np.ones(same.shape[0])

    def agreement(self, cosine: float | None) -> float | None:
        return self.equal_steps / self.steps if self.steps else None

    def extras(self) -> dict[str, float | None]:
        matched = self.equal_sequences / self.sequences if self.sequences else None
        return {"sequence_match": matched}


def _collapse(ids: np.ndarray, blank: int) -> tuple[int, ...]:
    keep = np.ones(ids.shape[0], dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    return tuple(int(i) for i in ids[keep] if i != blank)


@dataclass
class DenseMap(Task):
    """Maps thresholded at MAP_THRESHOLD: IoU of the positive cells over all samples (None
    when neither model marks any cell); a sample where neither does scores 1."""

    kind: Kind = "dense-map"
    metric: str = "map_iou"
    label: str = f"IoU of maps thresholded at {MAP_THRESHOLD:g}"
    sample_score: str = "IoU"
    nominal_range: float | None = 1.0  # a probability: an error of 0.5 is half the scale
    intersection: int = 0
    union: int = 0

    def sample_scores(self, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
        n = ref.shape[0]
        a = ref.reshape(n, -1) > MAP_THRESHOLD
        b = got.reshape(n, -1) > MAP_THRESHOLD
        inter = (a & b).sum(axis=1)
        union = (a | b).sum(axis=1)
        self.intersection += int(inter.sum())
        self.union += int(union.sum())
        return np.where(union > 0, inter / np.maximum(union, 1), 1.0)

    def agreement(self, cosine: float | None) -> float | None:
        return self.intersection / self.union if self.union else None

    def extras(self) -> dict[str, float | None]:
        return {"map_threshold": MAP_THRESHOLD}


@dataclass
class Embedding(Task):
    """Nearest-neighbour agreement: the share of samples whose nearest other sample (by
    cosine) is the same in both models, over the first NN_MAX_SAMPLES samples."""

    kind: Kind = "embedding"
    metric: str = "nn_agreement"
    label: str = "nearest-neighbour agreement"
    kept_ref: list[np.ndarray] = field(default_factory=list)
    kept_got: list[np.ndarray] = field(default_factory=list)
    kept: int = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        super().add(ref, got)
        room = NN_MAX_SAMPLES - self.kept
        if room > 0:
            self.kept_ref.append(ref[:room].astype(np.float32))
            self.kept_got.append(got[:room].astype(np.float32))
            self.kept += min(room, ref.shape[0])

    def agreement(self, cosine: float | None) -> float | None:
        if self.kept < 3:
            return None
        ref, got = np.concatenate(self.kept_ref), np.concatenate(self.kept_got)
        return float((_nearest(ref) == _nearest(got)).mean())


def _nearest(x: np.ndarray) -> np.ndarray:
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


_TASKS: dict[Kind, type[Task]] = {
    "class-scores": ClassScores,
    "embedding": Embedding,
    "sequence": Sequence,
    "dense-map": DenseMap,
    "values": Task,
}


def task_for(name: str, ref: np.ndarray) -> Task:
    """The agreement accumulator that suits an output, judged from its first batch."""
    return _TASKS[output_kind(name, ref)]()
