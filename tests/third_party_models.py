"""Small models shaped like the third-party ones the engine meets in the wild (issue 16).

Each builder trains (or seeds) a tiny torch model, exports it with the legacy exporter
(`dynamo=False`) at opset 11/12 with dynamic dims, and returns the file path; each has an
`.npz` dataset writer in the format `compress_engine.data` reads. What each one imitates:

- `se_grouped_classifier`: a mobile image classifier (MobileNet/EfficientNet-like): small
  feature maps pooled down to 1x1, a squeeze-excite block, grouped and depthwise convs, a Gemm
  head. Trained on scikit-learn's 8x8 digits (`digits_npz`), ~96% top-1.
- `cnn_sequence_model`: a CRNN text-line recogniser: a conv stack collapsing the height, a GRU
  over the width, per-step log-softmax `[N, T, C]` (CTC-style, class 0 = blank). Trained
  frame-wise on strips of four digits (`digit_strips_npz`); width is dynamic.
- `dense_map_detector`: a text/blob detector (DBNet/CRAFT-like): fully convolutional, a
  sigmoid probability map at 1/4 resolution that is mostly zero. Trained on noisy images with
  a few bright blobs (`blobs_npz`); height and width are dynamic.
- `stateful_streaming_model`: a streaming voice-activity model (Silero-VAD-like): inputs
  `input` [batch, 512], `state` [2, batch, 128] (batch second) and a scalar int64 `sr`, outputs
  `output` [batch, 1] and `stateN` [2, batch, 128]. Seeded, not trained (`streaming_npz`).
- `torchscript_with_int_arg`: a scripted audio model whose forward takes a non-tensor
  `sr: int` besides its tensor (`forward(self, x: Tensor, sr: int)`).

Trained weights are cached (in the process, and on disk under the temp dir), so calling a
builder again only re-exports (~0.1 s).
torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from model_builders import digits_dataset

if TYPE_CHECKING:
    import numpy as np
    import torch

SAMPLE_RATE = 16000
STRIP_DIGITS = 4  # digits per recogniser strip: [N, 1, 8, 32], T = 16 steps
BLANK = 0  # the recogniser's CTC blank; digit d is class d + 1


# --- the image classifier ------------------------------------------------------------------


def _se_grouped_net() -> torch.nn.Module:
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels: int, reduced: int) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.reduce = nn.Conv2d(channels, reduced, 1)
            self.expand = nn.Conv2d(reduced, channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            scale = torch.sigmoid(self.expand(torch.relu(self.reduce(self.pool(x)))))
            return x * scale

    class SEGroupedNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(  # 8x8
                nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.grouped = nn.Sequential(  # 8x8 -> 4x4, 4 groups
                nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(32), nn.ReLU()
            )
            self.depthwise = nn.Sequential(  # 4x4, one filter per channel
                nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU()
            )
            self.se = SqueezeExcite(32, 8)
            self.pointwise = nn.Sequential(nn.Conv2d(32, 48, 1), nn.ReLU())
            self.down = nn.Sequential(  # 4x4 -> 2x2 -> 1x1
                nn.Conv2d(48, 64, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2)
            )
            self.pool = nn.AdaptiveAvgPool2d(1)  # larger inputs still reach 1x1
            self.head = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pointwise(self.se(self.depthwise(self.grouped(self.stem(x)))))
            return self.head(torch.flatten(self.pool(self.down(x)), 1))

    return SEGroupedNet()


@functools.cache
def _trained_classifier() -> torch.nn.Module:
    def train(model: torch.nn.Module) -> None:
        x, y = digits_dataset(seed=0)
        _fit(model, x[:800], y[:800], epochs=3, lr=1e-2, loss="ce")

    return _trained("classifier", _se_grouped_net, train)


def se_grouped_classifier(directory: Path, opset: int = 12, dynamic: bool = True) -> Path:
    """`se_classifier.onnx`: input "input" [batch, 1, height, width] (digits are 8x8) ->
    "logits" [batch, 10]. With `dynamic=False` every dim is fixed: [1, 1, 8, 8] -> [1, 10]."""
    import torch

    axes = None
    if dynamic:
        axes = {"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}}
    name = "se_classifier.onnx" if dynamic else "se_classifier_fixed.onnx"
    return _export_onnx(
        _trained_classifier(),
        (torch.randn(1, 1, 8, 8),),
        Path(directory) / name,
        opset=opset,
        inputs=["input"],
        outputs=["logits"],
        axes=axes,
    )


def digits_npz(path: Path, n: int = 200, *, offset: int = 800) -> Path:
    """`input` [n, 1, 8, 8] float32 digits and `y` [n] labels (by default digits the
    classifier was not trained on: indices from `offset`, at most 997)."""
    import numpy as np

    x, y = digits_dataset(seed=0)
    x, y = x[offset : offset + n], y[offset : offset + n]
    return _save_npz(path, input=x, y=y.astype(np.int64))


# --- the CNN + sequence recogniser ---------------------------------------------------------


def _crnn_net(classes: int = 11) -> torch.nn.Module:
    import torch
    from torch import nn

    class CRNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # H 8->4, W/2
                nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                nn.MaxPool2d((2, 1)),  # H 4->2
                nn.Conv2d(32, 32, (2, 1)), nn.ReLU(),  # H 2->1: the height collapses
            )  # fmt: skip
            self.rnn = nn.GRU(32, 32, batch_first=True)
            self.head = nn.Linear(32, classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.features(x).squeeze(2).permute(0, 2, 1)  # [N, T, 32]
            h, _ = self.rnn(f)
            return torch.log_softmax(self.head(h), dim=-1)

    return CRNN()


def digit_strips(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` strips of STRIP_DIGITS random digits side by side: x [n, 1, 8, 32] float32, and
    per-step targets [n, 16] int64 (every step is 2 columns; each digit covers 4 steps, the
    first and last of them blank, CTC-style)."""
    import numpy as np

    images, labels = digits_dataset(seed=seed)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(images), size=(n, STRIP_DIGITS))
    x = np.concatenate([images[pick[:, k]] for k in range(STRIP_DIGITS)], axis=3)
    digit_steps = np.repeat(labels[pick] + 1, 4, axis=1)  # [n, 16]
    edge = np.tile([True, False, False, True], STRIP_DIGITS)
    targets = np.where(edge[None, :], BLANK, digit_steps)
    return x.astype(np.float32), targets.astype(np.int64)


@functools.cache
def _trained_recogniser() -> torch.nn.Module:
    def train(model: torch.nn.Module) -> None:
        x, targets = digit_strips(600, seed=1)
        _fit(model, x, targets, epochs=6, lr=5e-3, loss="nll_steps")

    return _trained("recogniser", _crnn_net, train)


def cnn_sequence_model(directory: Path, opset: int = 12) -> Path:
    """`crnn.onnx`: input "input" [batch, 1, 8, width] -> "log_probs" [batch, width/2, 11]
    (log-softmax over blank + 10 digits per step)."""
    import torch

    return _export_onnx(
        _trained_recogniser(),
        (torch.randn(1, 1, 8, 32),),
        Path(directory) / "crnn.onnx",
        opset=opset,
        inputs=["input"],
        outputs=["log_probs"],
        axes={"input": {0: "batch", 3: "width"}, "log_probs": {0: "batch", 1: "steps"}},
    )


def digit_strips_npz(path: Path, n: int = 64, *, seed: int = 7) -> Path:
    """`input` [n, 1, 8, 32] strips (no labels: the targets are per step, not per sample)."""
    x, _ = digit_strips(n, seed=seed)
    return _save_npz(path, input=x)


# --- the dense-map detector ----------------------------------------------------------------


def _detector_net() -> torch.nn.Module:
    import torch
    from torch import nn

    class DenseMapNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=2, dilation=2), nn.ReLU(),
            )  # fmt: skip
            self.head = nn.Conv2d(32, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.head(self.body(x)))

    return DenseMapNet()


def blob_images(
    n: int, *, size: int = 32, seed: int = 0, blobs: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy RGB images [n, 3, size, size] float32 with `blobs` bright Gaussian spots each, and
    target maps [n, 1, size/4, size/4] (1 in each spot's cell, else 0)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    x = 0.3 * rng.standard_normal((n, 3, size, size))
    maps = np.zeros((n, 1, size // 4, size // 4))
    for i in range(n):
        for cy, cx in rng.integers(3, size - 3, size=(blobs, 2)):
            spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)
            x[i] += 2.0 * spot * rng.uniform(0.6, 1.0, size=(3, 1, 1))
            maps[i, 0, cy // 4, cx // 4] = 1.0
    return x.astype(np.float32), maps.astype(np.float32)


@functools.cache
def _trained_detector() -> torch.nn.Module:
    def train(model: torch.nn.Module) -> None:
        x, maps = blob_images(200, seed=1)
        _fit(model, x, maps, epochs=6, lr=1e-2, loss="bce")

    return _trained("detector", _detector_net, train)


def dense_map_detector(directory: Path, opset: int = 11) -> Path:
    """`detector.onnx`: input "input" [batch, 3, height, width] -> "prob_map"
    [batch, 1, height/4, width/4], a sigmoid map that is ~0 away from the blobs."""
    import torch

    return _export_onnx(
        _trained_detector(),
        (torch.randn(1, 3, 32, 32),),
        Path(directory) / "detector.onnx",
        opset=opset,
        inputs=["input"],
        outputs=["prob_map"],
        axes={
            "input": {0: "batch", 2: "height", 3: "width"},
            "prob_map": {0: "batch", 2: "map_height", 3: "map_width"},
        },
    )


def blobs_npz(path: Path, n: int = 64, *, seed: int = 7) -> Path:
    """`input` [n, 3, 32, 32] blob images (no labels)."""
    x, _ = blob_images(n, seed=seed)
    return _save_npz(path, input=x)


# --- the stateful streaming model ----------------------------------------------------------


def _streaming_net() -> torch.nn.Module:
    import torch
    from torch import nn

    class StreamingNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(512, 128), nn.ReLU())
            self.cell = nn.LSTMCell(128, 128)
            self.decoder = nn.Linear(128, 1)

        def forward(
            self, samples: torch.Tensor, state: torch.Tensor, sr: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            # The sample rate rescales the frame, as resampling front ends do: a real input.
            frame = samples * (sr.to(samples.dtype) / SAMPLE_RATE)
            h, c = self.cell(self.encoder(frame), (state[0], state[1]))
            return torch.sigmoid(self.decoder(h)), torch.stack([h, c])

    torch.manual_seed(0)
    return StreamingNet().eval()


def stateful_streaming_model(directory: Path, opset: int = 12) -> Path:
    """`streaming.onnx`: "input" [batch, 512] float, "state" [2, batch, 128] float, "sr" []
    int64 -> "output" [batch, 1], "stateN" [2, batch, 128]."""
    import torch

    return _export_onnx(
        _streaming_net(),
        (torch.randn(1, 512), torch.zeros(2, 1, 128), torch.tensor(SAMPLE_RATE)),
        Path(directory) / "streaming.onnx",
        opset=opset,
        inputs=["input", "state", "sr"],
        outputs=["output", "stateN"],
        axes={
            "input": {0: "batch"},
            "state": {1: "batch"},
            "output": {0: "batch"},
            "stateN": {1: "batch"},
        },
    )


def streaming_feed(batch: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """One ONNX Runtime feed for the streaming model: `batch` frames, a random state, sr."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "input": (0.1 * rng.standard_normal((batch, 512))).astype(np.float32),
        "state": (0.5 * rng.standard_normal((2, batch, 128))).astype(np.float32),
        "sr": np.array(SAMPLE_RATE, dtype=np.int64),
    }


def streaming_npz(path: Path, n: int = 64, *, seed: int = 7, manifest: bool = True) -> Path:
    """`input` [n, 512], `state` [2, n, 128] (samples on axis 1) and a 0-d int64 `sr`: the
    model's own layout. With `manifest`, the dataset's manifest names `state`'s sample axis
    (compress_engine.data_layout); without it, only a recipe's evaluate.sample_axis can."""
    import json

    import numpy as np

    arrays = streaming_feed(n, seed=seed)
    if manifest:
        from compress_engine.data_layout import MANIFEST

        arrays[MANIFEST] = np.array(json.dumps({"sample_axis": {"state": 1}}))
    return _save_npz(path, **arrays)


# --- TorchScript with a non-tensor argument ------------------------------------------------


def torchscript_with_int_arg(directory: Path) -> Path:
    """`scripted_sr.pt`: a torch.jit.script module, forward(x: Tensor [batch, 512], sr: int)
    -> [batch, 1]; `sr` rescales the frame (as in the streaming model)."""
    import torch
    from torch import nn

    class ScriptedAudio(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(512, 64)
            self.decoder = nn.Linear(64, 1)

        def forward(self, x: torch.Tensor, sr: int) -> torch.Tensor:
            frame = x * (float(sr) / 16000.0)
            return torch.sigmoid(self.decoder(torch.relu(self.encoder(frame))))

    torch.manual_seed(0)
    path = Path(directory) / "scripted_sr.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, not gone
        torch.jit.save(torch.jit.script(ScriptedAudio().eval()), str(path))
    return path


# --- helpers -------------------------------------------------------------------------------


def _trained(
    name: str, build: Callable[[], torch.nn.Module], train: Callable[[torch.nn.Module], None]
) -> torch.nn.Module:
    """The model `build` makes, trained by `train` (both seeded), in eval mode.

    The weights are cached on disk under the temp dir, keyed by this file's text and the torch
    version, so the test processes of one machine train each model once (training is
    deterministic; the cache only saves time).
    """
    import hashlib

    import torch

    key = hashlib.sha256(Path(__file__).read_bytes() + torch.__version__.encode()).hexdigest()
    torch.manual_seed(0)
    model = build()
    cached = Path(tempfile.gettempdir()) / "modelpress-third-party-models" / f"{name}-{key[:16]}.pt"
    if cached.is_file():
        try:
            model.load_state_dict(torch.load(cached, weights_only=True))
            return model.eval()
        except (OSError, RuntimeError, EOFError):  # half-written or stale: train again
            pass
    train(model.train())
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), partial)
    os.replace(partial, cached)  # atomic: a concurrent reader sees the old file or the new one
    return model.eval()


def _fit(
    model: torch.nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, loss: str
) -> None:
    """Adam on (x, y) in batches of 64. loss: "ce" (class ids), "nll_steps" (per-step ids
    against log-probabilities [N, T, C]) or "bce" (probability maps)."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is faster, above all on a busy machine
    try:
        _fit_epochs(model, xt, yt, optimizer, generator, epochs=epochs, loss=loss)
    finally:
        torch.set_num_threads(threads)


def _fit_epochs(
    model: torch.nn.Module,
    xt: torch.Tensor,
    yt: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    *,
    epochs: int,
    loss: str,
) -> None:
    import torch
    from torch.nn import functional as F

    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=generator).split(64):
            optimizer.zero_grad()
            out = model(xt[idx])
            if loss == "ce":
                value = F.cross_entropy(out, yt[idx])
            elif loss == "nll_steps":
                value = F.nll_loss(out.flatten(0, 1), yt[idx].flatten())
            else:  # positives are rare: weigh them up so the map learns them
                weight = 1.0 + 5.0 * yt[idx]
                value = F.binary_cross_entropy(out, yt[idx], weight=weight)
            value.backward()
            optimizer.step()


def _export_onnx(
    model: torch.nn.Module,
    example: tuple,
    path: Path,
    *,
    opset: int,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]] | None,
) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy exporter is deprecated, and warns about GRU batch sizes; third-party
        # models are exported with it all the same.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
        )
    return path


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path
