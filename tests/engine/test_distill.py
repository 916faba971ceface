"""`distill:` and `finetune:` steps through `compress`, on a CNN trained on scikit-learn's 8x8
digits: the teacher learns on 1000 digits, the runs train and score on the other 797."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import model_builders
from compress_engine import EngineError, Report, compress
from compress_engine.report import TrainingDetails, TrainingPoint
from compress_engine.torch_side import device as train_device

FAST = {"latency_runs": 2, "warmup": 0, "fidelity_samples": 4, "batch_sizes": []}
TEACHER_SAMPLES = 1000
# Enough to win back most of what halving every hidden layer costs, in ~0.1 s.
DISTILL = {"epochs": 3, "lr": 3e-3}


@dataclass
class Run:
    report: Report
    out_dir: Path
    points: list[TrainingPoint] = field(default_factory=list)

    @property
    def training(self) -> TrainingDetails:
        (details,) = self.report.training
        return details

    @property
    def top1(self) -> float:
        assert self.report.accuracy is not None
        return self.report.accuracy.result_top1

    @property
    def artifact(self) -> Path:
        return self.out_dir / self.report.artifacts[0].name


def _compress(
    model: Path, steps: list[dict[str, Any]], data: Path | None, out_dir: Path, **kwargs: Any
) -> Run:
    points: list[TrainingPoint] = []
    report = compress(
        model,
        {"steps": steps, "evaluate": FAST},
        data,
        out_dir=out_dir,
        on_training=points.append,
        **kwargs,
    )
    return Run(report, out_dir, points)


def _predict(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].argmax(-1)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return model_builders.digits_dataset()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def teacher(digits: tuple[np.ndarray, np.ndarray], models: Path) -> Path:
    """build_conv_bn_cnn trained on the first 1000 digits (~97% top-1 on the others)."""
    x, y = digits
    return model_builders.export_digits_teacher(
        models / "teacher.onnx", x[:TEACHER_SAMPLES], y[:TEACHER_SAMPLES]
    )


@pytest.fixture(scope="module")
def digits_npz(digits: tuple[np.ndarray, np.ndarray], models: Path) -> Path:
    """The 797 digits the teacher never saw: half to train on, half to score."""
    x, y = digits
    path = models / "digits.npz"
    np.savez(path, x=x[TEACHER_SAMPLES:], y=y[TEACHER_SAMPLES:])
    return path


@pytest.fixture(scope="module")
def unlabelled_npz(digits: tuple[np.ndarray, np.ndarray], models: Path) -> Path:
    path = models / "digits-unlabelled.npz"
    np.savez(path, x=digits[0][TEACHER_SAMPLES:])
    return path


@pytest.fixture(scope="module")
def damaged(teacher: Path, models: Path) -> Path:
    """The teacher with noise on every weight: ~45% top-1 instead of ~97%."""
    return model_builders.damage_weights(teacher, models / "damaged.onnx", noise=1.0)


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory, digits_npz: Path) -> Callable[..., Run]:
    def make(model: Path, steps: list[dict[str, Any]], data: Path | None = None, **kw: Any) -> Run:
        out_dir = tmp_path_factory.mktemp("run")
        return _compress(model, steps, data or digits_npz, out_dir, **kw)

    return make


@pytest.fixture(scope="module")
def pruned_run(teacher: Path, make_run: Callable[..., Run]) -> Run:
    return make_run(teacher, [{"prune": {}}])


@pytest.fixture(scope="module")
def distilled_run(teacher: Path, make_run: Callable[..., Run]) -> Run:
    return make_run(teacher, [{"prune": {}}, {"distill": DISTILL}])


@pytest.fixture(scope="module")
def damaged_run(damaged: Path, teacher: Path, make_run: Callable[..., Run]) -> Run:
    return make_run(
        damaged,
        [{"distill": {"teacher": "good", "epochs": 3, "lr": 1e-3}}],
        teachers={"good": teacher},
    )


# --- distillation after pruning ------------------------------------------------------------


def test_distillation_decreases_the_kd_loss(distilled_run: Run) -> None:
    history = distilled_run.training.history

    assert [p.epoch for p in history] == [0, 1, 2, 3]
    assert history[0].train_loss is None
    assert history[1].train_loss is not None and history[-1].train_loss is not None
    assert history[-1].train_loss < 0.5 * history[1].train_loss


def test_a_separate_training_split_is_what_distillation_trains_on(
    teacher: Path, digits_npz: Path, tmp_path: Path
) -> None:
    ev = {**FAST, "calibration_fraction": 0.2, "training_fraction": 0.5}
    steps = [{"prune": {}}, {"distill": DISTILL}, {"quantize": {"mode": "static-int8"}}]

    report = compress(teacher, {"steps": steps, "evaluate": ev}, digits_npz, out_dir=tmp_path)

    # 797 digits: round(159.4) calibrate, round(398.5) train, the other 240 are scored.
    assert report.data is not None
    data = report.data
    assert (data.calibration_samples, data.training_samples) == (159, 398)
    assert data.evaluation_samples == 240
    (training,) = report.training
    assert training.train_samples + training.validation_samples == 398
    assert report.quantization is not None
    assert report.quantization.calibration_samples <= 159
    assert any("159 calibration and 398 training samples" in n for n in report.notes)


def test_without_a_training_fraction_training_shares_the_calibration_split(
    distilled_run: Run,
) -> None:
    data = distilled_run.report.data
    assert data is not None and data.training_samples is None
    assert distilled_run.training.train_samples + distilled_run.training.validation_samples == (
        data.calibration_samples
    )


def test_it_keeps_the_best_epoch(distilled_run: Run) -> None:
    details = distilled_run.training

    assert details.best >= details.before
    assert details.best == max(p.val_metric for p in details.history)
    assert details.history[details.best_epoch].val_metric == details.best
    assert details.best_epoch > 0


def test_it_wins_back_the_accuracy_pruning_lost(distilled_run: Run, pruned_run: Run) -> None:
    assert pruned_run.report.accuracy is not None
    assert pruned_run.report.accuracy.original_top1 > 0.9  # the teacher

    assert pruned_run.top1 < 0.7
    assert distilled_run.top1 > 0.85
    assert distilled_run.top1 > pruned_run.top1 + 0.3
    assert distilled_run.report.pruning is not None
    assert distilled_run.report.param_ratio is not None
    assert distilled_run.report.param_ratio < 0.4


def test_it_describes_the_training(distilled_run: Run) -> None:
    details = distilled_run.training
    data = distilled_run.report.data
    assert data is not None

    assert details.kind == "distill"
    assert details.teacher == "original"
    assert details.loss == (
        "0.7 x KL divergence of class scores softened at T=4 + 0.3 x cross-entropy on labels"
    )
    assert details.metric == "accuracy"
    assert details.train_samples + details.validation_samples == data.calibration_samples
    assert details.validation_samples == round(0.1 * data.calibration_samples)
    assert (details.epochs_run, details.stopped_early) == (3, False)
    assert details.optimizer_steps == 3 * -(-details.train_samples // 64)
    assert details.seconds_per_step > 0
    assert details.round_trip is not None
    assert details.round_trip.max_abs_diff <= details.round_trip.tolerance
    assert distilled_run.artifact.name == "model.distilled.onnx"


def test_on_training_gets_every_epoch_as_it_happens(distilled_run: Run) -> None:
    points = distilled_run.points

    assert [(p.kind, p.step, p.epoch) for p in points] == [("distill", 1, e) for e in range(4)]
    steps = [p.optimizer_steps for p in points]
    assert steps[0] == 0
    assert all(a < b for a, b in itertools.pairwise(steps))
    assert points == distilled_run.training.history
    assert [p.elapsed_s for p in points] == sorted(p.elapsed_s for p in points)
    # Cosine schedule: the learning rate ends lower than it starts.
    assert points[-1].lr < points[0].lr == DISTILL["lr"]


def test_the_report_on_disk_holds_the_training(distilled_run: Run) -> None:
    on_disk = Report.model_validate_json((distilled_run.out_dir / "report.json").read_text())

    assert on_disk.training == distilled_run.report.training
    assert on_disk.pruning == distilled_run.report.pruning


# --- named teachers ------------------------------------------------------------------------


def test_it_improves_a_damaged_student_from_a_named_teacher(
    damaged_run: Run, damaged: Path, teacher: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x = digits[0][TEACHER_SAMPLES:]
    good = _predict(teacher, x)
    accuracy = damaged_run.report.accuracy
    assert accuracy is not None

    assert damaged_run.training.teacher == "good"
    assert accuracy.original_top1 < 0.7  # the damaged model, as it came in
    assert accuracy.result_top1 > accuracy.original_top1 + 0.2
    agreement_before = np.mean(_predict(damaged, x) == good)
    agreement_after = np.mean(_predict(damaged_run.artifact, x) == good)
    assert agreement_after > agreement_before + 0.2


def test_an_unknown_teacher_name_is_refused(
    damaged: Path, teacher: Path, digits_npz: Path, tmp_path: Path
) -> None:
    known = r"'best' is not a model given to this run \(known: original, good\)"
    with pytest.raises(EngineError, match=known):
        _compress(
            damaged,
            [{"distill": {"teacher": "best", "epochs": 1}}],
            digits_npz,
            tmp_path,
            teachers={"good": teacher},
        )

    assert not list(tmp_path.glob("*.onnx"))


def test_a_teacher_with_other_input_shapes_is_refused(
    teacher: Path, digits_npz: Path, tmp_path: Path
) -> None:
    # Input "input" [batch, 64] where the student's "input" is [batch, 1, 8, 8].
    mlp = model_builders.export_tiny_mlp(tmp_path / "mlp.onnx", hidden=16)

    with pytest.raises(EngineError, match=r"The teacher's inputs .* differ from the student's"):
        _compress(
            teacher,
            [{"distill": {"teacher": "mlp", "epochs": 1}}],
            digits_npz,
            tmp_path / "out",
            teachers={"mlp": mlp},
        )


# --- without labels ------------------------------------------------------------------------


def test_without_labels_it_imitates_the_teacher_by_cosine(
    teacher: Path, unlabelled_npz: Path, make_run: Callable[..., Run]
) -> None:
    run = make_run(teacher, [{"prune": {}}, {"distill": {"epochs": 2, "lr": 3e-3}}], unlabelled_npz)
    details = run.training

    assert details.metric == "cosine"
    assert details.loss == "1 x 1 - cosine similarity to the teacher's outputs"
    assert all(-1.0 <= p.val_metric <= 1.0 for p in details.history)
    assert details.best > details.before
    assert run.report.accuracy is None


def test_each_epoch_moves_the_progress_of_the_training_stage(
    teacher: Path, digits_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compress_engine.torch_side import training

    # As on a fast machine, where a whole short run fits in one throttle interval of the
    # per-step reports: only the per-epoch reports can move the bar.
    monkeypatch.setattr(training, "PROGRESS_EVERY_S", 1e9)
    events: list[tuple[str, float]] = []
    recipe = {"steps": [{"distill": {"epochs": 4, "patience": None}}], "evaluate": FAST}

    compress(
        teacher,
        recipe,
        digits_npz,
        out_dir=tmp_path,
        progress=lambda _stage, f: events.append(("progress", f)),
        on_training=lambda point: events.append(("epoch", point.epoch)),
    )

    # Every epoch reports, right after its point, further than the report before.
    epochs = [i for i, (kind, _) in enumerate(events) if kind == "epoch"]
    assert len(epochs) == 5  # epoch 0 (before training) and four epochs
    for i in epochs[1:]:
        after, before = events[i + 1], [f for kind, f in events[:i] if kind == "progress"]
        assert after[0] == "progress" and after[1] > before[-1], events


def test_finetune_without_labels_is_refused_before_any_work(
    teacher: Path, unlabelled_npz: Path, tmp_path: Path
) -> None:
    calls: list[tuple[str, float]] = []
    points: list[TrainingPoint] = []

    with pytest.raises(EngineError, match="Fine-tuning trains on labels and this dataset has none"):
        compress(
            teacher,
            {"steps": [{"prune": {}}, {"finetune": {}}]},
            unlabelled_npz,
            out_dir=tmp_path / "out",
            progress=lambda stage, f: calls.append((stage, f)),
            on_training=points.append,
        )

    assert (calls, points) == ([], [])
    assert not (tmp_path / "out").exists()


def test_training_without_a_dataset_is_refused(teacher: Path, tmp_path: Path) -> None:
    for step in ({"distill": {}}, {"finetune": {}}):
        with pytest.raises(EngineError, match="needs training data"):
            compress(teacher, {"steps": [step]}, out_dir=tmp_path / "out")

    assert not (tmp_path / "out").exists()


def test_finetune_trains_on_the_labels(
    teacher: Path, pruned_run: Run, make_run: Callable[..., Run]
) -> None:
    run = make_run(teacher, [{"prune": {}}, {"finetune": {"epochs": 2, "lr": 3e-3}}])
    details = run.training

    assert (details.kind, details.teacher) == ("finetune", None)
    assert details.loss == "cross-entropy on labels"
    assert {p.kind for p in run.points} == {"finetune"}
    assert run.artifact.name == "model.finetuned.onnx"
    assert run.top1 > pruned_run.top1 + 0.2


# --- stopping and choosing ---------------------------------------------------------------


def test_early_stopping_hands_back_the_model_it_was_given(
    teacher: Path, pruned_run: Run, make_run: Callable[..., Run]
) -> None:
    # A learning rate this large wrecks the student in its first epoch.
    wild = {"epochs": 4, "lr": 1.0, "optimizer": "sgd", "patience": 1}
    run = make_run(teacher, [{"prune": {}}, {"distill": wild}])
    details = run.training
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)

    assert (details.best_epoch, details.epochs_run, details.stopped_early) == (0, 1, True)
    assert details.best == details.before
    assert details.history[1].val_metric < details.before
    assert any("did not improve the validation accuracy" in n for n in run.report.notes)
    # Epoch 0's weights: the pruned model, exactly.
    assert run.top1 == pruned_run.top1
    session = ort.InferenceSession(str(run.artifact), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(pruned_run.artifact), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        session.run(None, {"input": x})[0], reference.run(None, {"input": x})[0], atol=1e-5
    )


def test_a_negligible_learning_rate_stops_early_and_keeps_epoch_0(
    teacher: Path, make_run: Callable[..., Run]
) -> None:
    still = {"epochs": 5, "lr": 1e-9, "patience": 1}
    run = make_run(teacher, [{"prune": {}}, {"distill": still}])
    details = run.training

    assert (details.best_epoch, details.epochs_run, details.stopped_early) == (0, 1, True)
    assert any("did not improve" in n for n in run.report.notes)


def test_max_steps_caps_the_optimizer_steps(
    damaged: Path, teacher: Path, make_run: Callable[..., Run]
) -> None:
    step = {"teacher": "good", "epochs": 5, "max_steps": 4, "patience": None}
    run = make_run(damaged, [{"distill": step}], teachers={"good": teacher})

    assert run.training.optimizer_steps == 4
    assert run.training.epochs_run == 1
    assert [p.optimizer_steps for p in run.points] == [0, 4]


# --- other settings ------------------------------------------------------------------------


def test_feature_matching_adds_its_term_to_the_loss(
    damaged: Path, teacher: Path, damaged_run: Run, make_run: Callable[..., Run]
) -> None:
    step = {"teacher": "good", "epochs": 3, "lr": 1e-3, "feature_weight": 10.0}
    run = make_run(damaged, [{"distill": step}], teachers={"good": teacher})
    plain, matched = damaged_run.training.history[1], run.training.history[1]

    assert run.training.loss.endswith(" + 10 x feature MSE (same-shaped layers)")
    # Same student, teacher and data: only the feature term differs.
    assert plain.train_loss is not None and matched.train_loss is not None
    assert matched.train_loss > plain.train_loss + 1.0


def test_feature_matching_runs_on_a_pruned_student(
    teacher: Path, make_run: Callable[..., Run]
) -> None:
    step = {**DISTILL, "feature_weight": 1.0}
    run = make_run(teacher, [{"prune": {}}, {"distill": step}])

    assert "feature MSE" in run.training.loss
    assert run.training.best > run.training.before


def test_prune_distill_and_static_int8_make_a_small_accurate_model(
    teacher: Path, make_run: Callable[..., Run]
) -> None:
    int8 = {"mode": "static-int8", "samples": 64}
    run = make_run(teacher, [{"prune": {}}, {"distill": DISTILL}, {"quantize": int8}])
    report = run.report

    assert report.quantization is not None and report.quantization.mode == "static-int8"
    assert report.quantization.quantized_nodes > 0
    assert report.pruning is not None and len(report.training) == 1
    assert report.size_ratio is not None and report.size_ratio < 0.15
    assert run.top1 > 0.85
    assert [s.name for s in report.steps][1:4] == [
        "Pruning",
        "Distillation",
        "Static int8 quantization",
    ]


def test_the_same_recipe_trains_the_same_on_cpu(
    damaged: Path, teacher: Path, make_run: Callable[..., Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    pick = train_device.pick_device
    monkeypatch.setattr(train_device, "pick_device", lambda prefer_gpu=True: pick(False))
    step = {"teacher": "good", "epochs": 2, "lr": 1e-3}

    first, second = (
        make_run(damaged, [{"distill": step}], teachers={"good": teacher}) for _ in range(2)
    )

    assert first.training.device.startswith("cpu")
    assert first.training.mixed_precision is None
    losses = [(p.train_loss, p.val_metric) for p in first.training.history]
    assert losses == [(p.train_loss, p.val_metric) for p in second.training.history]
    assert first.report.result.sha256 == second.report.result.sha256
