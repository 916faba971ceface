"""A MobileNet-style depthwise-separable CNN with seeded random weights.

No labels and no trained weights: it is here for size and latency of a conv-heavy,
depthwise architecture, and for output fidelity on seeded random images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.models import BenchModel, export_image_classifier

NAME = "mobilenet-tiny"
OPSET = 17
SIDE = 96
CLASSES = 100
EVAL_SAMPLES = 128
CALIB_SAMPLES = 64
LARGE_BATCH = 32
SEED = 0
# (out channels, stride) of each depthwise-separable block after the 3x3 stem.
_BLOCKS = [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (256, 1), (512, 2)]


def _net():  # -> torch.nn.Module
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        ]

    layers: list[nn.Module] = conv_bn(3, 16, 3, 2)
    cin = 16
    for cout, stride in _BLOCKS:
        layers += conv_bn(cin, cin, 3, stride, groups=cin)  # depthwise
        layers += conv_bn(cin, cout, 1, 1)  # pointwise
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, CLASSES)]
    return nn.Sequential(*layers)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seeded synthetic images: smooth random blobs plus pixel noise.

    Pure white noise averages out under global pooling, so every image would get the same
    logits; low-frequency structure keeps the outputs (and their argmax) apart.
    """
    import torch

    coarse = torch.from_numpy(rng.standard_normal((n, 3, 6, 6), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(SIDE, SIDE), mode="bicubic").numpy()
    noise = rng.standard_normal((n, 3, SIDE, SIDE), dtype=np.float32)
    return (smooth + 0.3 * noise).astype(np.float32)


def _init(net) -> None:  # net: torch.nn.Module
    # He initialisation on fan-in (for a depthwise conv: its 3x3 window) keeps activations
    # alive through depth; BatchNorm keeps its identity statistics in eval mode.
    from torch import nn

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


def build(work: Path) -> BenchModel:
    import torch

    start = time.perf_counter()
    torch.manual_seed(SEED)
    net = _net()
    _init(net)
    net.eval()
    rng = np.random.default_rng(SEED)
    x_eval = _images(rng, EVAL_SAMPLES)
    x_calib = _images(rng, CALIB_SAMPLES)
    path = work / f"{NAME}.onnx"
    export_image_classifier(net, x_eval[:1], path, OPSET)
    calib_path = work / f"{NAME}-calib.npz"
    np.savez(calib_path, x=x_calib)
    return BenchModel(
        name=NAME,
        onnx_path=path,
        kind="classifier",
        eval_inputs={"input": x_eval},
        calib_inputs={"input": x_calib},
        calib_path=calib_path,
        large_batch=LARGE_BATCH,
        wall_s=time.perf_counter() - start,
        info={
            "weights": f"random (torch seed {SEED}), {CLASSES} classes, input 3x{SIDE}x{SIDE}",
            "eval_inputs": f"{EVAL_SAMPLES} seeded synthetic images (smooth blobs + noise)",
            "calibration_samples": CALIB_SAMPLES,
            "opset": OPSET,
        },
    )
