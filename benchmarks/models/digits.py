"""A small CNN trained at benchmark time on scikit-learn's bundled 8x8 digits.

Images are upsampled to 32x32 and normalised with training-set statistics; the split, the
initialisation and the batch order are seeded, so every run trains the same network.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.models import BenchModel, export_image_classifier

NAME = "digits-cnn"
OPSET = 17
SIDE = 32
TEST_SIZE = 0.3
EPOCHS = 12
BATCH = 64
CALIB_SAMPLES = 256
LARGE_BATCH = 32
SEED = 0


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = torch.nn.functional.interpolate(
        images, size=(SIDE, SIDE), mode="bilinear", align_corners=False
    ).numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=TEST_SIZE,
        random_state=SEED,
        stratify=digits.target,
    )
    mean, std = float(x_train.mean()), float(x_train.std())
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def _net():  # -> torch.nn.Module
    from torch import nn

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(1, 32), *block(32, 64), *block(64, 128),  # 32 -> 16 -> 8 -> 4
        nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10),
    )  # fmt: skip


def build(work: Path) -> BenchModel:
    import torch

    start = time.perf_counter()
    torch.manual_seed(SEED)
    x_train, y_train, x_test, y_test = _data()
    x_train = x_train.astype(np.float32)
    x_test = x_test.astype(np.float32)
    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    net.train()
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(xt), generator=gen).split(BATCH):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        train_acc = float((net(xt).argmax(1) == yt).float().mean())

    path = work / f"{NAME}.onnx"
    export_image_classifier(net, x_test[:1], path, OPSET)
    # Calibration from the training split, never from the test split that accuracy uses.
    calib = {"x": x_train[:CALIB_SAMPLES], "y": y_train[:CALIB_SAMPLES]}
    calib_path = work / f"{NAME}-calib.npz"
    np.savez(calib_path, **calib)
    np.savez(work / f"{NAME}-eval.npz", x=x_test, y=y_test)
    # Recipes that train (prune + finetune/distill) get the whole training split.
    train_path = work / f"{NAME}-train.npz"
    np.savez(train_path, x=x_train, y=y_train)
    return BenchModel(
        name=NAME,
        onnx_path=path,
        kind="classifier",
        eval_inputs={"input": x_test},
        calib_inputs={"input": calib["x"]},
        calib_path=calib_path,
        large_batch=LARGE_BATCH,
        labels=y_test,
        train_path=train_path,
        wall_s=time.perf_counter() - start,
        info={
            "dataset": "sklearn.datasets.load_digits, 8x8 upsampled to 32x32",
            "train_samples": len(x_train),
            "test_samples": len(x_test),
            "calibration_samples": CALIB_SAMPLES,
            "epochs": EPOCHS,
            "train_accuracy": round(100 * train_acc, 2),
            "opset": OPSET,
        },
    )
