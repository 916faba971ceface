"""Image-folder dataset zips for tests: scikit-learn's 8x8 digits rendered to PNG, one folder
per class, and helpers for hand-made (hostile) archives."""

from __future__ import annotations

import io
import zipfile

import numpy as np


def png(pixels: np.ndarray) -> bytes:
    """uint8 pixels ([H, W] grayscale or [H, W, 3] RGB) as PNG bytes."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def digit_pixels(digits: tuple[int, ...], per_class: int) -> dict[int, list[np.ndarray]]:
    """`per_class` 8x8 uint8 images (0-255) of each digit, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images / 16.0 * 255.0).astype(np.uint8)
    return {d: list(images[data.target == d][:per_class]) for d in digits}


def digits_zip(
    digits: tuple[int, ...] = (0, 1, 2), per_class: int = 6, *, folder=str
) -> tuple[bytes, dict[int, list[np.ndarray]]]:
    """(zip bytes, pixels by digit): `<folder(d)>/<i>.png` per image, plus the files a Finder
    zip carries and a README, which the dataset ignores like the engine does."""
    pixels = digit_pixels(digits, per_class)
    members = {
        f"{folder(d)}/{i:03d}.png": png(image)
        for d, images in pixels.items()
        for i, image in enumerate(images)
    }
    members["__MACOSX/0/._000.png"] = b"finder metadata"
    members["README.txt"] = b"one folder per digit"
    return zip_bytes(members), pixels
