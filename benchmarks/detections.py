"""YOLOv8-style detector outputs -> detections, and how many of fp32's a variant keeps.

The raw output is [B, 4 + C, N]: per anchor a box (cx, cy, w, h, in input pixels) and C class
scores (already sigmoid, no objectness). Decoding keeps each anchor's best class when its
score clears SCORE_THRESHOLD, then runs non-maximum suppression at NMS_IOU.

Agreement is recall against fp32: a reference detection counts as kept when the variant has
a detection of the same class overlapping it at IoU >= MATCH_IOU, each variant detection
matching at most one reference detection (greedy, highest reference score first).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# nudenet's own post-processing keeps boxes scoring >= 0.25 after NMS at IoU 0.45.
SCORE_THRESHOLD = 0.25
NMS_IOU = 0.45
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Detections:
    """One image's detections: boxes as x1, y1, x2, y2."""

    boxes: np.ndarray  # K x 4 float
    scores: np.ndarray  # K
    classes: np.ndarray  # K int

    def __len__(self) -> int:
        return len(self.scores)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1y1x2y2 box with each of `boxes` (0 where the union is empty)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, highest score first (a box suppresses IoU > threshold)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while len(order):
        best, rest = order[0], order[1:]
        keep.append(best)
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode(
    output: np.ndarray,
    score_threshold: float = SCORE_THRESHOLD,
    iou_threshold: float = NMS_IOU,
    *,
    per_class: bool = True,
) -> list[Detections]:
    """Detections per image of a [B, 4 + C, N] output.

    per_class=False suppresses across classes (one box per place whatever its class).
    """
    out = []
    for pred in np.asarray(output, dtype=np.float64):
        scores_all = pred[4:]
        classes = scores_all.argmax(axis=0)
        scores = scores_all.max(axis=0)
        mask = scores >= score_threshold
        cx, cy, w, h = pred[:4, mask]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        scores, classes = scores[mask], classes[mask]
        if per_class:
            kept = [
                np.flatnonzero(classes == c)[
                    nms(boxes[classes == c], scores[classes == c], iou_threshold)
                ]
                for c in np.unique(classes)
            ]
            keep = np.concatenate(kept) if kept else np.empty(0, dtype=np.int64)
        else:
            keep = nms(boxes, scores, iou_threshold)
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        out.append(Detections(boxes[keep], scores[keep], classes[keep].astype(np.int64)))
    return out


def matched(reference: Detections, candidate: Detections, iou_threshold: float = MATCH_IOU) -> int:
    """How many reference detections a candidate detection of the same class matches."""
    used = np.zeros(len(candidate), dtype=bool)
    hits = 0
    for i in np.argsort(-reference.scores, kind="stable"):
        free = ~used & (candidate.classes == reference.classes[i])
        if not free.any():
            continue
        overlaps = np.where(free, iou(reference.boxes[i], candidate.boxes), -1.0)
        best = int(overlaps.argmax())
        if overlaps[best] >= iou_threshold:
            used[best] = True
            hits += 1
    return hits


def detection_agreement(
    reference: list[Detections], candidate: list[Detections], iou_threshold: float = MATCH_IOU
) -> float | None:
    """fp32 detections matched by the candidate / fp32 detections (None when fp32 has none)."""
    total = sum(len(r) for r in reference)
    if total == 0:
        return None
    hits = sum(matched(r, c, iou_threshold) for r, c in zip(reference, candidate, strict=True))
    return hits / total


def count(detections: list[Detections]) -> int:
    return sum(len(d) for d in detections)
