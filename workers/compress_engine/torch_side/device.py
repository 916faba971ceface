"""Where torch-side passes train: CUDA when a GPU is present, else CPU; seeds fixed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrainDevice:
    device: Any  # torch.device
    description: str  # e.g. "cpu (4 threads)" or "cuda (NVIDIA H100 80GB HBM3)"
    autocast_dtype: Any | None  # torch.bfloat16 / torch.float16 on GPU; None = float32

    @property
    def mixed_precision(self) -> str | None:
        return None if self.autocast_dtype is None else str(self.autocast_dtype).split(".")[-1]


def pick_device(prefer_gpu: bool = True) -> TrainDevice:
    import torch

    if prefer_gpu and torch.cuda.is_available():
        return cuda_device(0)
    return cpu_device()


def cuda_device(index: int) -> TrainDevice:
    """GPU `index` of those visible (CUDA_VISIBLE_DEVICES), in bfloat16 autocast where the GPU
    has it, else float16."""
    import torch

    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    name = torch.cuda.get_device_name(index)
    return TrainDevice(torch.device("cuda", index), f"cuda ({name})", dtype)


def cpu_device() -> TrainDevice:
    import torch

    return TrainDevice(torch.device("cpu"), f"cpu ({torch.get_num_threads()} threads)", None)


def seed_everything(seed: int) -> None:
    """Same seed, same data order and initialisation; cuDNN picks deterministic kernels."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
