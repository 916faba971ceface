"""Depthwise-convolution models for the bias-correction tests and measurements.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

# (out channels, stride) of each depthwise-separable block after the stem, MobileNet-style.
_BLOCKS = [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]
SIDE = 32


def build_mobilenet(seed: int = 0, *, classes: int = 10) -> torch.nn.Module:
    """A small MobileNet (v1-style): 3x3 stem, depthwise-separable blocks (Conv-BN-ReLU6 each),
    global average pool and a Linear classifier, for 1x32x32 inputs."""
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(),
        ]

    torch.manual_seed(seed)
    layers: list[nn.Module] = conv_bn(1, 16, 3, 1)
    cin = 16
    for cout, stride in _BLOCKS:
        layers += conv_bn(cin, cin, 3, stride, groups=cin)  # depthwise
        layers += conv_bn(cin, cout, 1, 1)  # pointwise
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def digits_32(*, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits upsampled (bilinear) to 32x32, shuffled with `seed` and
    standardised: x [1797, 1, 32, 32] float32, y [1797] int64."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32))[:, None]
    x = torch.nn.functional.interpolate(x, size=(SIDE, SIDE), mode="bilinear").numpy()
    x = (x - 0.3) / 0.4
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order].astype(np.float32), digits.target[order].astype(np.int64)


def export_mobilenet(
    path: Path,
    x: np.ndarray | None = None,
    y: np.ndarray | None = None,
    *,
    epochs: int = 3,
    seed: int = 0,
    opset: int = 17,
) -> Path:
    """build_mobilenet, trained on (x, y) with Adam when given (3 epochs on 1200 of
    digits_32: ~97% top-1 on the other 597; ~7 s on two idle cores), exported with input
    "input" [batch, 1, 32, 32] -> "logits" [batch, 10] and a dynamic batch."""
    import torch

    model = build_mobilenet(seed)
    if x is not None and y is not None:
        _train(model, torch.from_numpy(x), torch.from_numpy(y), epochs, seed)
    model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, SIDE, SIDE),),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path


# Every weight but the largest sits this far (in int8 steps) from the grid of a symmetric
# per-channel quantizer (scale = max|w| / 127), so it always rounds the same way.
ROUNDING_OFFSET = 0.4


def write_offset_depthwise(
    path: Path, *, channels: int = 8, bias: bool = True, seed: int = 0
) -> Path:
    """One 3x3 depthwise Conv ("input" [batch, C, 12, 12] -> "output") whose int8 weights are
    biased by construction: per channel, the largest weight is 1.0 (the scale is 1/127) and
    the other eight sit ROUNDING_OFFSET steps above the grid in even channels (they round
    down) and below it in odd ones (they round up), so on positive inputs each channel's int8
    output drifts by about 8 x 0.4 / 127 x mean(input), down or up. The Conv has a float bias
    or none."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    steps = rng.integers(20, 100, size=(channels, 1, 3, 3)).astype(np.float64)
    sign = np.where(np.arange(channels) % 2 == 0, 1.0, -1.0)[:, None, None, None]
    weights = (steps + sign * ROUNDING_OFFSET) / 127.0
    weights[:, 0, 1, 1] = 1.0  # the largest: exactly on the grid
    inits = [numpy_helper.from_array(weights.astype(np.float32), "w")]
    inputs = ["input", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.5, channels).astype(np.float32), "b"))
        inputs.append("b")
    conv = helper.make_node("Conv", inputs, ["output"], name="dw", group=channels)
    shape = ["batch", channels, 12, 12]
    graph = helper.make_graph(
        [conv],
        "offset_depthwise",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [*shape[:2], 10, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, path)
    return path


def positive_images(n: int, channels: int = 8, *, seed: int = 0) -> np.ndarray:
    """Inputs for write_offset_depthwise: uniform in [0.5, 1.5], so their mean is 1."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, size=(n, channels, 12, 12)).astype(np.float32)


def _train(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int
) -> None:
    import torch

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
