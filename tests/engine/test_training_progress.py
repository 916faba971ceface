"""Distillation moves the progress bar batch by batch within an epoch, not only at its end,
however fast the batches run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import model_builders
from compress_engine import compress

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}


@pytest.fixture(scope="module")
def teacher_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("progress")
    x, y = model_builders.digits_dataset()
    teacher = model_builders.export_digits_teacher(folder / "teacher.onnx", x[:1000], y[:1000])
    np.savez(folder / "digits.npz", x=x[1000:], y=y[1000:])
    return teacher, folder / "digits.npz"


def test_a_distill_step_reports_progress_within_its_one_epoch(
    teacher_and_data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compress_engine.torch_side import training

    # As on a fast machine, where the whole epoch fits in one time-throttle interval.
    monkeypatch.setattr(training, "PROGRESS_EVERY_S", 1e9)
    teacher, data = teacher_and_data
    events: list[tuple[str, float]] = []
    recipe = {"steps": [{"distill": {"epochs": 1, "batch_size": 8}}], "evaluate": FAST}

    report = compress(
        teacher,
        recipe,
        data,
        out_dir=tmp_path,
        progress=lambda _stage, f: events.append(("progress", f)),
        on_training=lambda point: events.append(("epoch", point.epoch)),
    )

    steps = report.training[0].history[-1].optimizer_steps
    start, end = [i for i, (kind, _) in enumerate(events) if kind == "epoch"]
    within = [f for kind, f in events[start + 1 : end] if kind == "progress"]
    assert steps >= 30
    # Every batch but the last (reported after the epoch's validation) moved the bar.
    assert len(within) == steps - 1
    assert within == sorted(within) and len(set(within)) == len(within)
    assert events[end + 1][0] == "progress" and events[end + 1][1] > within[-1]
