"""Data-parallel training (torch DistributedDataParallel) exercised on CPU over gloo: the same
spawn, process group, batch sharing and all-reduce as on a worker with several GPUs (NCCL).

World size 1 must train exactly as the plain loop does; world size 2 must compute the same
gradients (BatchNorm aside) and report once per epoch, not once per rank."""

from __future__ import annotations

import copy
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import model_builders
from compress_engine import EngineError, Report, compress
from compress_engine.report import TrainingDetails, TrainingPoint
from compress_engine.torch_configs import DistillConfig
from compress_engine.torch_side.convert import load_torch
from compress_engine.torch_side.device import cpu_device
from compress_engine.torch_side.distributed import (
    DDP_ENV,
    WorldPlan,
    parse_ddp_setting,
    plan_world,
    run_distributed,
)
from compress_engine.torch_side.training import Split, Trainer, split_data

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}
TEACHER_SAMPLES = 1000
GLOO_1 = WorldPlan(1, "gloo", "cpu")
GLOO_2 = WorldPlan(2, "gloo", "cpu")


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return model_builders.digits_dataset()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def teacher(digits: tuple[np.ndarray, np.ndarray], models: Path) -> Path:
    x, y = digits
    return model_builders.export_digits_teacher(
        models / "teacher.onnx", x[:TEACHER_SAMPLES], y[:TEACHER_SAMPLES]
    )


@pytest.fixture(scope="module")
def damaged(teacher: Path, models: Path) -> Path:
    return model_builders.damage_weights(teacher, models / "damaged.onnx", noise=1.0)


@pytest.fixture(scope="module")
def digits_npz(digits: tuple[np.ndarray, np.ndarray], models: Path) -> Path:
    x, y = digits
    path = models / "digits.npz"
    np.savez(path, x=x[TEACHER_SAMPLES:], y=y[TEACHER_SAMPLES:])
    return path


@pytest.fixture(scope="module")
def split(digits: tuple[np.ndarray, np.ndarray]) -> Split:
    """The 797 held-out digits: 717 to train on (11 batches of 64 and one of 13), 80 to
    validate on."""
    from compress_engine.data import Dataset

    x, y = digits
    data = Dataset(inputs={"input": x[TEACHER_SAMPLES:]}, labels=y[TEACHER_SAMPLES:])
    return split_data(data, ["input"], 0.1, seed=0)


def _trainer(
    student: nn.Module,
    teacher: nn.Module,
    split: Split,
    points: list[TrainingPoint] | None = None,
    **cfg: Any,
) -> Trainer:
    return Trainer(
        student=student,
        teacher=teacher,
        split=split,
        cfg=DistillConfig(**{"epochs": 2, "lr": 1e-3, "patience": None, **cfg}),
        kind="distill",
        device=cpu_device(),
        step_index=1,
        on_point=None if points is None else points.append,
        teacher_name="original",
    )


def _curve(details: TrainingDetails) -> list[tuple[int, int, float | None, float]]:
    return [(p.epoch, p.optimizer_steps, p.train_loss, p.val_metric) for p in details.history]


def _assert_close_curves(a: TrainingDetails, b: TrainingDetails, rtol: float) -> None:
    assert [p[:2] for p in _curve(a)] == [p[:2] for p in _curve(b)]
    assert a.history[0].train_loss is b.history[0].train_loss is None
    losses = [[p.train_loss for p in d.history[1:]] for d in (a, b)]
    metrics = [[p.val_metric for p in d.history] for d in (a, b)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=rtol)
    np.testing.assert_allclose(metrics[0], metrics[1], rtol=rtol)


def _mlp(seed: int) -> nn.Module:
    """No BatchNorm: with it, each rank would normalise over its own share of a batch."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


# --- world size 1: the plain loop, exactly ---------------------------------------------------


def test_world_size_1_trains_exactly_as_the_plain_loop(
    damaged: Path, teacher: Path, split: Split, tmp_path: Path
) -> None:
    # The modules the distill step trains: ONNX rebuilt by onnx2torch, with BatchNorm folded.
    student, mentor = load_torch(damaged).module, load_torch(teacher).module
    plain_points: list[TrainingPoint] = []
    ddp_points: list[TrainingPoint] = []
    plain_student, ddp_student = copy.deepcopy(student), copy.deepcopy(student)

    plain = _trainer(plain_student, copy.deepcopy(mentor), split, plain_points).run(None)  # type: ignore[arg-type]
    ddp = run_distributed(
        _trainer(ddp_student, copy.deepcopy(mentor), split, ddp_points), GLOO_1, tmp_path, None
    )

    assert (ddp.world_size, ddp.backend) == (1, "gloo")
    assert ddp.device == f"1 × {plain.device}, DistributedDataParallel over gloo"
    assert (plain.world_size, plain.backend) == (1, None)
    assert _curve(ddp) == _curve(plain)
    assert (ddp.best, ddp.best_epoch, ddp.optimizer_steps) == (
        plain.best,
        plain.best_epoch,
        plain.optimizer_steps,
    )
    assert plain.best > plain.before  # it did train
    plain_state, ddp_state = plain_student.state_dict(), ddp_student.state_dict()
    assert plain_state.keys() == ddp_state.keys()
    for name, tensor in plain_state.items():
        assert torch.equal(ddp_state[name], tensor), name
    assert [(p.epoch, p.train_loss, p.val_metric) for p in ddp_points] == [
        (p.epoch, p.train_loss, p.val_metric) for p in plain_points
    ]


# --- world size 2 --------------------------------------------------------------------------


def test_world_size_2_computes_the_gradients_of_whole_batches(
    digits: tuple[np.ndarray, np.ndarray], split: Split, tmp_path: Path
) -> None:
    # Uneven shares (the last batch of 13 splits 7 + 6) test the loss weighting too.
    plain_student, ddp_student = _mlp(1), _mlp(1)
    x, y = digits
    mentor = _mlp(2)
    # A teacher worth imitating: the MLP fitted on the other 1000 digits.
    optimizer = torch.optim.Adam(mentor.parameters(), lr=3e-3)
    for _ in range(20):
        optimizer.zero_grad()
        nn.functional.cross_entropy(
            mentor(torch.from_numpy(x[:1000])), torch.from_numpy(y[:1000])
        ).backward()
        optimizer.step()
    mentor.eval()

    plain = _trainer(plain_student, copy.deepcopy(mentor), split).run(None)  # type: ignore[arg-type]
    ddp = run_distributed(
        _trainer(ddp_student, copy.deepcopy(mentor), split), GLOO_2, tmp_path, None
    )

    assert (ddp.world_size, ddp.backend) == (2, "gloo")
    assert ddp.optimizer_steps == plain.optimizer_steps == 2 * 12
    _assert_close_curves(ddp, plain, rtol=1e-4)
    for name, tensor in plain_student.state_dict().items():
        torch.testing.assert_close(ddp_student.state_dict()[name], tensor, rtol=1e-4, atol=1e-5)


def test_world_size_2_distils_a_pruned_model_through_compress(
    teacher: Path, digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DDP_ENV, "2")  # on CPU, only an explicit number starts gloo ranks
    points: list[TrainingPoint] = []
    progress: list[tuple[str, float]] = []
    steps = [{"prune": {}}, {"distill": {"epochs": 3, "lr": 3e-3}}]

    report = compress(
        teacher,
        {"steps": steps, "evaluate": FAST},
        digits_npz,
        out_dir=tmp_path,
        progress=lambda stage, f: progress.append((stage, f)),
        on_training=points.append,
    )

    (details,) = report.training
    assert (details.world_size, details.backend) == (2, "gloo")
    assert details.device.startswith("2 × cpu (")
    # Once per epoch from rank 0, not once per rank; as they happened, then in the report.
    assert [(p.kind, p.step, p.epoch) for p in points] == [("distill", 1, e) for e in range(4)]
    assert points == details.history
    assert details.optimizer_steps == 3 * -(-details.train_samples // 64)
    assert details.best_epoch > 0 and details.best > details.before
    fractions = [f for stage, f in progress if stage == "Distilling"]
    assert fractions == sorted(fractions) and len(fractions) >= 4
    # A valid student: exported, checked, and as accurate as a single process makes it.
    assert report.accuracy is not None and report.accuracy.result_top1 > 0.85
    assert report.artifacts[0].name == "model.distilled.onnx"
    on_disk = Report.model_validate_json((tmp_path / "report.json").read_text())
    assert on_disk.training[0].world_size == 2


def test_pruning_recovery_trains_on_the_ranks_too(
    teacher: Path, digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DDP_ENV, "2")
    points: list[TrainingPoint] = []
    prune = {"iterations": 2, "recover_epochs": 1, "amount": 0.5}

    report = compress(
        teacher,
        {"steps": [{"prune": prune}], "evaluate": FAST},
        digits_npz,
        out_dir=tmp_path,
        on_training=points.append,
    )

    assert [(p.kind, p.epoch) for p in points] == [("recover", 0), ("recover", 1)]
    assert report.pruning is not None and report.pruning.iterations == 2
    assert report.accuracy is not None and report.accuracy.result_top1 > 0.5


# --- failures ------------------------------------------------------------------------------


def test_a_ranks_engine_error_reaches_the_caller(
    damaged: Path, teacher: Path, split: Split, tmp_path: Path
) -> None:
    student = load_torch(damaged).module
    for p in student.parameters():
        p.requires_grad_(False)

    with pytest.raises(EngineError, match="The model has no trainable weights"):
        run_distributed(
            _trainer(student, load_torch(teacher).module, split), GLOO_2, tmp_path, None
        )

    assert multiprocessing.active_children() == []


def test_a_cancellation_from_a_callback_ends_every_rank(
    damaged: Path, teacher: Path, split: Split, tmp_path: Path
) -> None:
    seen: list[int] = []

    def on_point(point: TrainingPoint) -> None:
        seen.append(point.epoch)
        if point.epoch == 1:
            raise Cancelled

    trainer = _trainer(load_torch(damaged).module, load_torch(teacher).module, split, epochs=50)
    trainer.on_point = on_point

    with pytest.raises(Cancelled):
        run_distributed(trainer, GLOO_2, tmp_path, None)

    assert seen == [0, 1]
    assert multiprocessing.active_children() == []
    assert not list(tmp_path.glob("ddp-*"))  # scratch removed


# A process that starts a child which calls _die_with (as each rank does), then waits.
MIDDLE = """
import os, subprocess, sys, time

rank = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], str(os.getpid())], stdout=subprocess.PIPE, text=True
)
print(rank.pid, rank.stdout.readline().strip(), flush=True)
time.sleep(600)
"""
RANK = """
import sys, time
from compress_engine.torch_side.distributed import _die_with

_die_with(int(sys.argv[1]))
print("ready", flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; nothing may be left to reap it here


def test_a_rank_ends_when_the_process_that_spawned_it_is_killed(
    engine_env: dict[str, str],
) -> None:
    # Over NCCL the other ranks would wait in a collective until it timed out (10 minutes),
    # holding their GPUs, after the engine's process was killed at a hard time limit.
    middle = subprocess.Popen(
        [sys.executable, "-c", MIDDLE, RANK], stdout=subprocess.PIPE, text=True, env=engine_env
    )
    try:
        assert middle.stdout is not None
        pid, ready = middle.stdout.readline().split()
        rank = int(pid)
        assert ready == "ready" and _running(rank)

        middle.kill()  # SIGKILL: no chance to clean up
        middle.wait(timeout=30)
        deadline = time.monotonic() + 30
        while _running(rank) and time.monotonic() < deadline:
            time.sleep(0.05)

        assert not _running(rank)
    finally:
        middle.kill()
        middle.wait(timeout=30)


def test_an_unreadable_ddp_setting_is_refused_before_any_work(
    teacher: Path, digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DDP_ENV, "lots")
    points: list[TrainingPoint] = []

    with pytest.raises(EngineError, match=r"MODELPRESS_DDP is 'lots': set it to auto"):
        compress(
            teacher,
            {"steps": [{"distill": {"epochs": 1}}], "evaluate": FAST},
            digits_npz,
            out_dir=tmp_path / "out",
            on_training=points.append,
        )

    assert points == []


@pytest.mark.parametrize("value", [0, -1, 65, 1.5, "two"])
def test_max_gpus_must_be_a_count_of_gpus(value: object) -> None:
    from compress_engine import Recipe

    with pytest.raises(EngineError, match="max_gpus"):
        Recipe.parse({"steps": [{"distill": {"max_gpus": value}}]})


# --- the plan ------------------------------------------------------------------------------


def _plan(
    device: str = "cuda",
    gpus: int = 4,
    *,
    max_gpus: int | None = None,
    setting: str | None = None,
    batch: int = 64,
    fixed: int | None = None,
    daemonic: bool = False,
) -> WorldPlan:
    return plan_world(
        device,
        gpus,
        max_gpus=max_gpus,
        setting=setting,
        batch_size=batch,
        fixed_batch=fixed,
        daemonic=daemonic,
    )


def test_every_visible_gpu_trains_unless_told_otherwise() -> None:
    assert _plan() == WorldPlan(4, "nccl", "cuda")
    assert _plan(gpus=1).size == 1
    assert _plan(max_gpus=2).size == 2
    assert _plan(max_gpus=1).size == 1
    assert _plan(max_gpus=8).size == 4
    assert _plan(setting="off").size == 1
    assert _plan(setting=" Auto ").size == 4
    assert _plan(setting="2").size == 2
    assert _plan(setting="3", max_gpus=2).size == 2


def test_cpu_trains_in_one_process_unless_a_number_is_set() -> None:
    assert _plan("cpu", 0) == WorldPlan(1, "gloo", "cpu")
    assert _plan("cpu", 0, max_gpus=4).size == 1
    assert _plan("cpu", 0, setting="2") == WorldPlan(2, "gloo", "cpu")


def test_every_rank_gets_a_share_of_every_batch() -> None:
    assert _plan(batch=2).size == 2
    # A fixed-batch model runs its own batch on every rank.
    assert _plan(batch=2, fixed=8).size == 4


def test_a_daemonic_process_trains_alone_and_says_why() -> None:
    plan = _plan(daemonic=True)

    assert plan.size == 1
    assert plan.note is not None and "daemonic" in plan.note
    assert _plan(gpus=1, daemonic=True).note is None


def test_more_gpus_than_the_worker_sees_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")

    with pytest.raises(EngineError, match=r"asks for 3 GPUs, but this worker sees 2 \(CUDA_VIS"):
        _plan(gpus=2, setting="3")


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, None),
        ("", None),
        ("auto", None),
        ("off", 1),
        ("OFF", 1),
        ("0", 1),
        ("1", 1),
        ("8", 8),
    ],
)
def test_the_ddp_setting_reads(value: str | None, parsed: int | None) -> None:
    assert parse_ddp_setting(value) == parsed


@pytest.mark.parametrize("value", ["yes", "-2", "2.5", "65", "all"])
def test_an_impossible_ddp_setting_is_refused(value: str) -> None:
    with pytest.raises(EngineError, match=r"auto .*, off .* or a number of processes from 2 to 64"):
        parse_ddp_setting(value)


def test_reports_from_before_data_parallel_training_still_read() -> None:
    old = {
        "kind": "distill",
        "loss": "cross-entropy on labels",
        "device": "cpu (2 threads)",
        "train_samples": 10,
        "validation_samples": 2,
        "metric": "accuracy",
        "before": 1.0,
        "best": 2.0,
        "best_epoch": 1,
        "epochs_run": 1,
        "stopped_early": False,
        "optimizer_steps": 1,
        "seconds_per_step": 0.1,
        "history": [],
    }

    details = TrainingDetails.model_validate(old)

    assert (details.world_size, details.backend) == (1, None)


# --- on GPUs (skipped without CUDA) ----------------------------------------------------------


@pytest.fixture
def cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (torch.cuda.is_available() is false)")


@pytest.mark.gpu
def test_world_size_1_over_nccl_trains_as_the_plain_loop_on_a_gpu(
    cuda: None, damaged: Path, teacher: Path, split: Split, tmp_path: Path
) -> None:
    from compress_engine.torch_side.device import cuda_device

    student, mentor = load_torch(damaged).module, load_torch(teacher).module
    plain_student, ddp_student = copy.deepcopy(student), copy.deepcopy(student)
    make: Callable[[nn.Module], Trainer] = lambda s: Trainer(  # noqa: E731
        student=s,
        teacher=copy.deepcopy(mentor),
        split=split,
        cfg=DistillConfig(epochs=2, lr=1e-3, patience=None),
        kind="distill",
        device=cuda_device(0),
    )

    plain = make(plain_student).run(None)  # type: ignore[arg-type]
    ddp = run_distributed(make(ddp_student), WorldPlan(1, "nccl", "cuda"), tmp_path, None)

    assert (ddp.world_size, ddp.backend) == (1, "nccl")
    assert ddp.device.startswith("1 × cuda (")
    _assert_close_curves(ddp, plain, rtol=1e-3)
    for name, tensor in plain_student.state_dict().items():
        torch.testing.assert_close(ddp_student.state_dict()[name], tensor, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_every_gpu_of_the_worker_distils(
    cuda: None, teacher: Path, digits_npz: Path, tmp_path: Path
) -> None:
    gpus = torch.cuda.device_count()
    if gpus < 2:
        pytest.skip(f"needs two CUDA devices; {gpus} visible")
    points: list[TrainingPoint] = []

    report = compress(
        teacher,
        {"steps": [{"prune": {}}, {"distill": {"epochs": 3, "lr": 3e-3}}], "evaluate": FAST},
        digits_npz,
        out_dir=tmp_path,
        on_training=points.append,
    )

    (details,) = report.training
    assert (details.world_size, details.backend) == (gpus, "nccl")
    assert [p.epoch for p in points] == [0, 1, 2, 3]
    assert report.accuracy is not None and report.accuracy.result_top1 > 0.85
