"""GPU paths: distillation on CUDA in mixed precision, and ONNX Runtime's CUDA provider on the
exported model. Skipped cleanly where torch sees no CUDA device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import model_builders
from compress_engine import Report, compress
from compress_engine.device import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    describe_device,
    gpu_available,
    select_providers,
)
from compress_engine.measure.runtime import create_session
from compress_engine.report import TrainingPoint
from compress_engine.torch_side.device import pick_device

pytestmark = pytest.mark.gpu

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}
TEACHER_SAMPLES = 1000


@pytest.fixture(scope="module", autouse=True)
def cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is false)")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def teacher(models: Path) -> Path:
    x, y = model_builders.digits_dataset()
    return model_builders.export_digits_teacher(
        models / "teacher.onnx", x[:TEACHER_SAMPLES], y[:TEACHER_SAMPLES]
    )


@pytest.fixture(scope="module")
def digits_npz(models: Path) -> Path:
    x, y = model_builders.digits_dataset()
    path = models / "digits.npz"
    np.savez(path, x=x[TEACHER_SAMPLES:], y=y[TEACHER_SAMPLES:])
    return path


@pytest.fixture(scope="module")
def run(
    tmp_path_factory: pytest.TempPathFactory, digits_npz: Path
) -> Callable[..., tuple[Report, Path, list[TrainingPoint]]]:
    def make(model: Path, steps: list[dict[str, Any]]) -> tuple[Report, Path, list[TrainingPoint]]:
        out_dir = tmp_path_factory.mktemp("run")
        points: list[TrainingPoint] = []
        report = compress(
            model,
            {"steps": steps, "evaluate": FAST},
            digits_npz,
            out_dir=out_dir,
            on_training=points.append,
        )
        return report, out_dir / report.artifacts[0].name, points

    return make


@pytest.fixture(scope="module")
def distilled(teacher: Path, run: Callable[..., Any]) -> tuple[Report, Path, list[TrainingPoint]]:
    return run(teacher, [{"prune": {}}, {"distill": {"epochs": 3, "lr": 3e-3}}])


def test_pick_device_prefers_the_gpu() -> None:
    gpu, cpu = pick_device(), pick_device(prefer_gpu=False)

    assert gpu.device.type == "cuda"
    assert gpu.mixed_precision in ("bfloat16", "float16")
    assert cpu.device.type == "cpu" and cpu.mixed_precision is None


def test_distillation_trains_on_cuda_in_mixed_precision(
    distilled: tuple[Report, Path, list[TrainingPoint]],
) -> None:
    report, _, points = distilled
    (details,) = report.training
    assert report.accuracy is not None

    assert details.device.startswith("cuda")
    assert details.mixed_precision in ("bfloat16", "float16")
    assert details.best > details.before
    assert [p.epoch for p in points] == [0, 1, 2, 3]
    assert report.accuracy.result_top1 > 0.85


def test_iterative_pruning_recovers_on_cuda(teacher: Path, run: Callable[..., Any]) -> None:
    report, artifact, points = run(teacher, [{"prune": {"iterations": 2, "recover_epochs": 1}}])

    assert {p.kind for p in points} == {"recover"}
    assert report.pruning is not None
    widths = {layer.name: layer.after for layer in report.pruning.layers}
    assert widths["/3/Conv"] == 16
    assert artifact.is_file()


def test_onnx_runtime_runs_the_exported_model_on_cuda(
    distilled: tuple[Report, Path, list[TrainingPoint]],
) -> None:
    _, artifact, _ = distilled
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)

    assert gpu_available()
    assert select_providers() == [CUDA_PROVIDER, CPU_PROVIDER]
    gpu = create_session(artifact, providers=select_providers(), threads=1)
    cpu = create_session(artifact, providers=[CPU_PROVIDER], threads=1)

    assert gpu.get_providers()[0] == CUDA_PROVIDER
    np.testing.assert_allclose(
        gpu.run(None, {"input": x})[0], cpu.run(None, {"input": x})[0], rtol=1e-2, atol=1e-2
    )
    assert f"via {CUDA_PROVIDER}" in describe_device(CUDA_PROVIDER)
