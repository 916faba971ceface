"""Seeded crops of the photographs shipped inside the scikit-image, scikit-learn and matplotlib
wheels.

Evaluation data for the image models that have no labelled set here (nothing is downloaded):
random crops of varying scale and aspect from a fixed list of photos, resized to the model's
side. Calibration and evaluation are split *by source photo*, so a calibration crop never
shows a scene that an evaluation crop shows. Grayscale photos are converted to RGB.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Split = Literal["calibration", "evaluation"]

# Photographs only: the synthetic images beside them (chessboards, colour wheel, logo,
# phantom, horse silhouette, animated GIF, multi-page TIFFs) are left out.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png",
    "coffee.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png",
    "moon.png", "motorcycle_left.png", "page.png", "retina.jpg", "rocket.jpg", "text.png",
)  # fmt: skip
# matplotlib's sample data: a portrait (people are what a detector of body parts reacts to).
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg",)
# The photos with people in them (one calibrates, two evaluate): what a detector of faces and
# body parts has something to find in.
PEOPLE = ("matplotlib/grace_hopper.jpg", "skimage/astronaut.png", "skimage/camera.png")
# Photos whose shorter side is below this are too small to crop at varying scale.
MIN_SIDE = 160
# The calibration photos, one of each kind (a portrait, an object, textures, a micrograph,
# a medical image, a landscape); every other photo evaluates.
CALIBRATION = (
    "skimage/astronaut.png", "skimage/coffee.png", "skimage/gravel.png", "skimage/cell.png",
    "skimage/moon.png", "skimage/retina.jpg", "sklearn/china.jpg",
)  # fmt: skip
# A crop's shorter side is this fraction of the photo's shorter side; its aspect (w/h) is
# drawn from ASPECT (square crops when a caller asks for them).
SCALE = (0.25, 1.0)
ASPECT = (0.6, 1.67)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Photo:
    name: str
    pixels: np.ndarray  # H x W x 3 uint8, RGB


def _photo_files() -> list[tuple[str, Path]]:
    import matplotlib
    import skimage

    skimage_dir = Path(skimage.__file__).parent / "data"
    sample_dir = Path(matplotlib.get_data_path()) / "sample_data"
    return [(f"skimage/{n}", skimage_dir / n) for n in SKIMAGE_PHOTOS] + [
        (f"matplotlib/{n}", sample_dir / n) for n in MATPLOTLIB_PHOTOS
    ]


def _load(name: str, path: Path) -> Photo:
    from PIL import Image

    with Image.open(path) as img:
        return Photo(name, np.asarray(img.convert("RGB")))


@functools.cache
def photos() -> tuple[Photo, ...]:
    """The photos, RGB, sorted by name; the ones missing or too small are skipped."""
    from sklearn.datasets import load_sample_images

    # Another release may ship fewer photos: the missing ones are skipped.
    found = [_load(name, path) for name, path in _photo_files() if path.is_file()]
    sample = load_sample_images()
    for filename, pixels in zip(sample.filenames, sample.images, strict=True):
        found.append(Photo(f"sklearn/{Path(filename).name}", np.asarray(pixels, dtype=np.uint8)))
    kept = [p for p in found if min(p.pixels.shape[:2]) >= MIN_SIDE]
    return tuple(sorted(kept, key=lambda p: p.name))


def photo(name: str) -> Photo:
    """One scikit-image or matplotlib photo by its name, e.g. "skimage/chelsea.png"."""
    return _load(name, dict(_photo_files())[name])


def center_crop(pixels: np.ndarray, side: int) -> np.ndarray:
    """The central square of an H x W x 3 image, resized to side x side (uint8)."""
    from PIL import Image

    h, w = pixels.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    square = Image.fromarray(np.ascontiguousarray(pixels[y0 : y0 + s, x0 : x0 + s]))
    return np.asarray(square.resize((side, side), Image.BILINEAR))


def split_photos(split: Split, among: Collection[str] | None = None) -> list[Photo]:
    """The split's photos, or only those of them named in `among`."""
    calibration = split == "calibration"
    return [
        p
        for p in photos()
        if (p.name in CALIBRATION) == calibration and (among is None or p.name in among)
    ]


def crops(
    split: Split,
    n: int,
    side: int,
    *,
    seed: int,
    square: bool = True,
    letterbox: bool = False,
    among: Collection[str] | None = None,
) -> np.ndarray:
    """n crops of `split`'s photos as N x side x side x 3 uint8, cycling over the photos.

    square=False draws the aspect from ASPECT; letterbox=True then pads each crop to a square
    with black at the bottom/right before resizing (how YOLO-style detectors are fed), instead
    of stretching it. `among` restricts the split to the photos it names.
    """
    from PIL import Image

    pool = split_photos(split, among)
    if not pool:
        raise RuntimeError("no photos found in the scikit-image / scikit-learn wheels")
    rng = np.random.default_rng(seed)
    out = np.empty((n, side, side, 3), dtype=np.uint8)
    for i in range(n):
        pixels = pool[i % len(pool)].pixels
        h, w = pixels.shape[:2]
        short = rng.uniform(*SCALE) * min(h, w)
        aspect = 1.0 if square else float(np.exp(rng.uniform(*np.log(ASPECT))))
        cw = int(min(w, round(short * max(aspect, 1.0))))
        ch = int(min(h, round(short / min(aspect, 1.0))))
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
        crop = pixels[y0 : y0 + ch, x0 : x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if letterbox:
            big = max(ch, cw)
            canvas = np.zeros((big, big, 3), dtype=np.uint8)
            canvas[:ch, :cw] = crop
            crop = canvas
        img = Image.fromarray(np.ascontiguousarray(crop))
        out[i] = np.asarray(img.resize((side, side), Image.BILINEAR))
    return out


def to_nchw(
    images: np.ndarray,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> np.ndarray:
    """uint8 NHWC -> float32 NCHW: scaled to 0..1, then (x - mean) / std per channel."""
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def describe(split: Split, among: Collection[str] | None = None) -> str:
    names = ", ".join(p.name for p in split_photos(split, among))
    return f"{split}: crops of {names}"
