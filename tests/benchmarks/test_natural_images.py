"""Evaluation crops for the image reference models: seeded, disjoint splits, right layout."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from benchmarks.models import natural_images as ni


def test_calibration_and_evaluation_share_no_photo() -> None:
    calib = {p.name for p in ni.split_photos("calibration")}
    evaluation = {p.name for p in ni.split_photos("evaluation")}
    assert calib and evaluation and not calib & evaluation
    assert calib | evaluation == {p.name for p in ni.photos()}
    # The detector's people photos are on both sides of the split too.
    assert ni.split_photos("calibration", ni.PEOPLE) and ni.split_photos("evaluation", ni.PEOPLE)


def test_photos_are_rgb_and_large_enough() -> None:
    for photo in ni.photos():
        assert photo.pixels.dtype == np.uint8 and photo.pixels.shape[2] == 3
        assert min(photo.pixels.shape[:2]) >= ni.MIN_SIDE


def test_crops_are_seeded() -> None:
    a = ni.crops("evaluation", 6, 32, seed=3, square=False, letterbox=True)
    b = ni.crops("evaluation", 6, 32, seed=3, square=False, letterbox=True)
    c = ni.crops("evaluation", 6, 32, seed=4, square=False, letterbox=True)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_to_nchw_normalises_per_channel() -> None:
    images = np.full((2, 4, 4, 3), 255, dtype=np.uint8)
    x = ni.to_nchw(images, mean=(0.5, 0.0, 1.0), std=(0.5, 1.0, 2.0))
    assert x.shape == (2, 3, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 1.0, 0.0])
