"""Dataset uploads, read without trusting them, through the engine's own inspection
(compress_engine.inspect_dataset: `.npz` arrays from their headers, `.zip` image folders the
way a job will read them; compress_engine.load_text: `.txt` / `.jsonl` text for language
models), plus what only the web does with them: the stored name, the preview page and its
thumbnails.

Sample thumbnails are rendered on request from the stored file (render_preview), by their
index in the list recorded at upload, so no name from a URL ever reaches the archive and no
second set of files has to follow the dataset through quotas and deletions.
"""

from __future__ import annotations

import io
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compress_engine import DatasetInfo, EngineError, image_sample, inspect_dataset, npz_sample
from registry.models import Dataset

# Dataset.samples is a PostgreSQL integer.
MAX_SAMPLES = 2**31 - 1
THUMBNAIL_SIDE = 96
TEXT_SUFFIXES = (".txt", ".jsonl")
# The opening characters of a text dataset kept for its page.
TEXT_PREVIEW_CHARS = 2000
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


class DatasetRejected(Exception):
    """An upload refused; the message says why and what to do."""


def stored_filename(upload_name: str) -> str:
    """The fixed name the file is stored under (Dataset.stored_suffix reads it back)."""
    suffix = Path(upload_name.lower()).suffix
    return f"data{suffix}" if suffix in (".zip", *TEXT_SUFFIXES) else "data.npz"


@dataclass
class TextInfo:
    """What a text upload holds: the Dataset fields it sets (named as on Dataset)."""

    samples: int  # passages: paragraphs of a .txt, records of a .jsonl
    characters: int
    previews: list[dict[str, str]] = field(default_factory=list)  # [{"text": passage}]
    kind: str = Dataset.Kind.TEXT


def inspect_upload(path: Path, upload_name: str, *, max_bytes: int) -> DatasetInfo | TextInfo:
    """What a dataset upload holds, by its suffix: `.npz` arrays, `.zip` image folders, or
    `.txt` / `.jsonl` text."""
    if Path(upload_name.lower()).suffix in TEXT_SUFFIXES:
        return inspect_text(path, upload_name)
    try:
        return inspect_dataset(path, name=upload_name, max_bytes=max_bytes, max_samples=MAX_SAMPLES)
    except EngineError as exc:
        raise DatasetRejected(str(exc)) from exc


def inspect_text(path: Path, upload_name: str) -> TextInfo:
    """Read a text upload the way a job will (compress_engine.load_text: UTF-8, a `text`
    field on every .jsonl line, the engine's size bound) and keep its opening passages.

    The engine reads the format off the file's suffix and names the file in its messages, so
    it is given a link named after the upload (the temporary upload file's name is Django's)."""
    from compress_engine import load_text, text_preview

    name = Path(upload_name).name
    stem, suffix = name[: -len(Path(name).suffix)], Path(name).suffix.lower()
    safe = (_UNSAFE_NAME.sub("-", stem).strip(" -.")[:100] or "data") + suffix
    with tempfile.TemporaryDirectory(prefix="text-upload-") as tmp:
        link = Path(tmp) / safe
        link.symlink_to(Path(path).resolve())
        try:
            text = load_text(link)
        except EngineError as exc:
            raise DatasetRejected(str(exc)) from exc
    if len(text.passages) > MAX_SAMPLES:
        raise DatasetRejected(f"{safe} holds more than {MAX_SAMPLES:,} passages.")
    shown = text_preview(text, TEXT_PREVIEW_CHARS)
    return TextInfo(
        samples=shown.passages_count,
        characters=shown.characters,
        previews=[{"text": passage} for passage in shown.passages],
    )


def apply_info(info: DatasetInfo | TextInfo, dataset: Dataset) -> None:
    """Set the Dataset fields an upload determines (they are named as in DatasetInfo)."""
    for name, value in vars(info).items():
        setattr(dataset, name, value)


# --- previews -------------------------------------------------------------------------------


class PreviewUnavailable(Exception):
    """The stored file no longer yields this sample (the view answers 404)."""


def render_preview(dataset: Dataset, index: int) -> bytes:
    """Sample `index` of dataset.previews as a PNG thumbnail (longest side at most
    THUMBNAIL_SIDE), decoded from the stored file and re-encoded: the browser never gets
    the uploaded bytes."""
    from PIL import Image

    if dataset.is_text or not 0 <= index < len(dataset.previews):
        raise PreviewUnavailable(f"no sample {index}")
    preview = dataset.previews[index]
    try:
        with dataset.file.open("rb") as handle:
            if dataset.is_image_folder:
                pixels = image_sample(handle, preview["member"], dataset.image_channels or "RGB")
            else:
                pixels = _display(npz_sample(handle, preview["array"], int(preview["index"])))
    except (KeyError, ValueError, OSError, EngineError) as exc:
        raise PreviewUnavailable(str(exc)) from exc
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _display(sample: np.ndarray) -> np.ndarray:
    """A .npz sample ([H, W] or [H, W, C]) as uint8 grey or RGB pixels, scaled to 0-255 over
    its own range (display only)."""
    sample = sample.astype(np.float64)
    if sample.ndim == 3 and sample.shape[2] == 1:
        sample = sample[..., 0]
    sample = np.nan_to_num(sample)
    low, high = float(sample.min()), float(sample.max())
    scaled = (sample - low) / (high - low) * 255.0 if high > low else np.zeros_like(sample)
    return scaled.round().astype(np.uint8)


# --- the preview page -----------------------------------------------------------------------

HISTOGRAM_BARS = 50


@dataclass(frozen=True)
class Bar:
    name: str
    count: int
    width: float  # percent of the largest class, for the bar
    share: float  # percent of all samples


@dataclass(frozen=True)
class Thumbnail:
    index: int
    label: str


def preview_context(dataset: Dataset) -> dict[str, Any]:
    """What templates/registry/dataset.html shows."""
    if dataset.is_text:
        return {"dataset": dataset, "passages": [p.get("text", "") for p in dataset.previews]}
    classes = dataset.classes or []
    largest = max((c["count"] for c in classes), default=0)
    total = sum(c["count"] for c in classes) or 1
    bars = [
        Bar(
            name=c["name"],
            count=c["count"],
            width=round(100.0 * c["count"] / largest, 1) if largest else 0.0,
            share=round(100.0 * c["count"] / total, 1),
        )
        for c in classes[:HISTOGRAM_BARS]
    ]
    thumbnails = [Thumbnail(i, str(p.get("label", ""))) for i, p in enumerate(dataset.previews)]
    groups: dict[str, list[Thumbnail]] = {}
    for thumb in thumbnails:
        groups.setdefault(thumb.label, []).append(thumb)
    return {
        "dataset": dataset,
        "bars": bars,
        "hidden_classes": max(len(classes) - HISTOGRAM_BARS, 0),
        "preview_classes": len(groups),
        # Image folders: a row of samples per class; .npz: the leading samples in order.
        "thumbnail_groups": list(groups.items()) if dataset.is_image_folder else [],
        "thumbnails": [] if dataset.is_image_folder else thumbnails,
        "stats": dataset.image_stats.get(dataset.image_channels) if dataset.image_stats else None,
        "gray_stats": dataset.image_stats.get("L") if dataset.image_stats else None,
        "rgb_stats": dataset.image_stats.get("RGB") if dataset.image_stats else None,
    }
