"""A model version's image preprocessing: how its pixels were prepared in training.

Set once on the model version page and used as the default of every job's normalisation
(the recipe's evaluate.image_mean/image_std) for image-folder datasets. Without it a job
normalises nothing: pixels are scaled to [0, 1] and fed as they are. A dataset's own pixel
statistics are never used on their own: the model was trained with some preprocessing, and
normalising by the evaluation data's statistics instead reports an accuracy the deployed
model will not have.

The engine scales pixels to [0, 1] and then applies (x - mean) / std; a model trained on
[0, 255] pixels is expressed in those terms by dividing its mean and std by 255. The layout
(NCHW or NHWC) and the size are read off the model's input shape.
"""

from __future__ import annotations

from dataclasses import dataclass

from compress_engine import EngineError, ImageLayout, TensorInfo, image_layout
from registry.models import ModelVersion
from web.rejections import Rejected

SCALES = {"1": "[0, 1]", "255": "[0, 255]"}


class PreprocessingRejected(Rejected):
    status = 400


@dataclass(frozen=True)
class Preprocessing:
    """Per-channel mean and std, applied to pixels in `scale` ("1": [0, 1], "255": [0, 255])."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: str = "1"

    @classmethod
    def of(cls, version: ModelVersion) -> Preprocessing:
        stored = version.preprocessing or {}
        if not stored:
            return cls()
        return cls(
            tuple(stored.get("mean", (0.0,))),
            tuple(stored.get("std", (1.0,))),
            str(stored.get("scale", "1")),
        )

    @property
    def is_none(self) -> bool:
        """No normalisation: pixels scaled to [0, 1] and fed as they are."""
        return self.recipe_values() == {"image_mean": [0.0], "image_std": [1.0]}

    def recipe_values(self) -> dict[str, list[float]]:
        """The engine's evaluate.image_mean/image_std for these settings (it scales to [0, 1]
        first)."""
        factor = 255.0 if self.scale == "255" else 1.0
        return {
            "image_mean": [round(m / factor, 8) for m in self.mean],
            "image_std": [round(s / factor, 8) for s in self.std],
        }

    def describe(self) -> str:
        if self.is_none:
            return "none: pixels scaled to [0, 1], no mean or std"
        mean = ", ".join(f"{m:g}" for m in self.mean)
        std = ", ".join(f"{s:g}" for s in self.std)
        return f"pixels scaled to {SCALES.get(self.scale, '[0, 1]')}, mean [{mean}], std [{std}]"

    def as_json(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}


def model_image_layout(version: ModelVersion) -> ImageLayout | None:
    """The layout of the version's one image input; None when it takes no image."""
    if len(version.inputs) != 1:
        return None
    try:
        return image_layout(TensorInfo.model_validate(version.inputs[0]))
    except EngineError:
        return None


def parse_values(text: str, name: str, *, positive: bool = False) -> tuple[float, ...]:
    """ "0.485, 0.456, 0.406" -> floats; PreprocessingRejected with a readable reason."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise PreprocessingRejected(
            f"{name} must be numbers separated by commas, e.g. 0.485, 0.456, 0.406."
        ) from None
    if len(values) not in (1, 3):
        raise PreprocessingRejected(f"{name} takes one value, or one per channel (three).")
    if positive and any(v <= 0 for v in values):
        raise PreprocessingRejected(f"{name} values must be above 0.")
    return values


def set_preprocessing(version: ModelVersion, *, mean: str, std: str, scale: str) -> Preprocessing:
    """Record how the version's pixels are prepared; every new job on it starts from this."""
    if version.is_llm:
        raise PreprocessingRejected("A language model takes text, not images.")
    if scale not in SCALES:
        raise PreprocessingRejected("Pixel scale must be [0, 1] or [0, 255].")
    chosen = Preprocessing(
        parse_values(mean or "0", "Mean"), parse_values(std or "1", "Std", positive=True), scale
    )
    layout = model_image_layout(version)
    channels = layout.channels if layout is not None else 3
    for name, values in (("Mean", chosen.mean), ("Std", chosen.std)):
        if len(values) not in (1, channels):
            raise PreprocessingRejected(
                f"{name} has {len(values)} values; this model's input has {channels} channel"
                f"{'s' if channels != 1 else ''}: give 1 or {channels}."
            )
    version.preprocessing = {} if chosen.is_none else chosen.as_json()
    version.save(update_fields=["preprocessing"])
    return chosen
