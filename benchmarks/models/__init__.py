"""Reference models the benchmark builds itself: no weights or datasets are downloaded.

Each builder writes an ONNX file plus a calibration `.npz` into a work folder and returns a
`BenchModel`: everything the harness needs to produce, time and compare variants.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from benchmarks.detections import Detections

# How a model's outputs are judged: classifiers by top-1/top-5 agreement (and accuracy when
# labelled), embedders by cosine and nearest-neighbour agreement, detectors by the fp32
# detections a variant keeps.
Kind = Literal["classifier", "embedding", "detector"]


@dataclass
class BenchModel:
    """A built reference model and the data it is measured on."""

    name: str
    onnx_path: Path
    kind: Kind
    # Evaluation inputs, name -> array with the samples along axis 0.
    eval_inputs: dict[str, np.ndarray]
    # Calibration data as written to calib_path (arrays named after inputs, or `x`/`y`).
    calib_inputs: dict[str, np.ndarray]
    calib_path: Path
    large_batch: int
    labels: np.ndarray | None = None
    # The whole training split (inputs and labels) for recipes that train (prune + distill).
    train_path: Path | None = None
    # Detectors: the model's first output (all samples) -> detections per sample.
    postprocess: Callable[[np.ndarray], list[Detections]] | None = None
    wall_s: float = 0.0
    # Free-form facts recorded in the JSON meta (split sizes, epochs, sequence length...).
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return len(next(iter(self.eval_inputs.values())))

    def batch(self, start: int, size: int) -> dict[str, np.ndarray]:
        return {k: v[start : start + size] for k, v in self.eval_inputs.items()}


Builder = Callable[[Path], BenchModel]


def export_image_classifier(net: Any, sample: np.ndarray, path: Path, opset: int) -> Path:
    """A torch image classifier as ONNX: input "input", output "logits", dynamic batch."""
    import torch

    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.from_numpy(sample),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


def builders() -> dict[str, Builder]:
    """Model name -> builder; the builders import torch and friends lazily."""
    from benchmarks.models import digits, efficientnet, minilm, nudenet

    return {
        "digits-cnn": digits.build,
        "minilm-l6": minilm.build,
        "efficientnet-lite0": efficientnet.build,
        "nudenet-320n": nudenet.build,
    }
