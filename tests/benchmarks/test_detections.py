"""Decoding a YOLOv8-style output and matching detections, on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.detections import Detections, decode, detection_agreement, iou, matched, nms


def _dets(*rows: tuple[float, float, float, float, float, int]) -> Detections:
    arr = np.asarray([r[:5] for r in rows], dtype=np.float64).reshape(-1, 5)
    return Detections(arr[:, :4], arr[:, 4], np.asarray([r[5] for r in rows], dtype=np.int64))


def _raw(anchors: list[tuple[float, float, float, float, list[float]]]) -> np.ndarray:
    """One image's [1, 4 + C, N] output from (cx, cy, w, h, class scores) per anchor."""
    cols = [[cx, cy, w, h, *scores] for cx, cy, w, h, scores in anchors]
    return np.asarray(cols, dtype=np.float32).T[None]


def test_iou_of_hand_made_boxes() -> None:
    box = np.array([0.0, 0.0, 10.0, 10.0])
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [0, 0, 0, 0]], float)
    # identical; half overlap: 50 / 150; touching corners; empty union.
    np.testing.assert_allclose(iou(box, others), [1.0, 1 / 3, 0.0, 0.0])
    assert iou(np.zeros(4), np.zeros((1, 4)))[0] == 0.0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [5, 0, 15, 10]], float)
    scores = np.array([0.6, 0.9, 0.5, 0.7])
    # 1 (0.9) suppresses 0 (IoU 9/11); 3 overlaps 1 at 6/14 <= 0.45 and stays; 2 is apart.
    assert nms(boxes, scores, 0.45).tolist() == [1, 3, 2]


def test_decode_thresholds_converts_and_suppresses_per_class() -> None:
    raw = _raw(
        [
            (5, 5, 10, 10, [0.9, 0.1]),  # class 0 -> box 0,0,10,10
            (6, 5, 10, 10, [0.8, 0.0]),  # class 0, IoU 9/11 with the first: suppressed
            (6, 5, 10, 10, [0.0, 0.7]),  # class 1 at the same place: kept per class
            (50, 50, 4, 2, [0.1, 0.2]),  # below 0.25: dropped
        ]
    )
    (dets,) = decode(raw, 0.25, 0.45)
    assert dets.classes.tolist() == [0, 1]
    np.testing.assert_allclose(dets.scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_allclose(dets.boxes, [[0, 0, 10, 10], [1, 0, 11, 10]])
    # Class-agnostic suppression drops the class-1 box as well.
    (agnostic,) = decode(raw, 0.25, 0.45, per_class=False)
    assert agnostic.classes.tolist() == [0]


def test_decode_of_an_image_without_detections() -> None:
    (dets,) = decode(_raw([(5, 5, 10, 10, [0.1, 0.2])]))
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)


def test_matching_is_same_class_one_to_one_at_iou_half() -> None:
    ref = _dets(
        (0, 0, 10, 10, 0.9, 0),
        (0, 0, 10, 10, 0.8, 0),  # a duplicate: the single candidate can match only one
        (20, 0, 30, 10, 0.7, 1),  # candidate has class 0 here: no match
        (40, 0, 50, 10, 0.6, 2),  # candidate shifted to IoU 1/3: no match
        (60, 0, 70, 10, 0.5, 3),  # candidate shifted to IoU 0.5 exactly: match
    )
    cand = _dets(
        (0, 0, 10, 10, 0.95, 0),
        (20, 0, 30, 10, 0.7, 0),
        (45, 0, 55, 10, 0.6, 2),
        (60, 0, 70, 20, 0.5, 3),
    )
    assert matched(ref, cand) == 2
    assert detection_agreement([ref], [cand]) == pytest.approx(2 / 5)


def test_agreement_pools_images_and_is_none_without_reference_detections() -> None:
    a = _dets((0, 0, 10, 10, 0.9, 0))
    b = _dets((0, 0, 10, 10, 0.9, 0), (20, 20, 30, 30, 0.8, 1))
    empty = _dets()
    assert detection_agreement([a, b], [a, empty]) == pytest.approx(1 / 3)
    assert detection_agreement([a, b], [a, b]) == 1.0
    assert detection_agreement([empty], [a]) is None
