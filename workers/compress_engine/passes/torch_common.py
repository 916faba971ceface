"""What the torch-side passes share: rebuilding and checking the module, teachers, data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress_engine.errors import EngineError
from compress_engine.inspect import TensorInfo, same_inputs
from compress_engine.passes.base import PassContext
from compress_engine.report import TorchRoundTrip

if TYPE_CHECKING:
    from compress_engine.torch_side.convert import TorchModel
    from compress_engine.torch_side.training import Split


def load_checked(path: Path, ctx: PassContext) -> tuple[TorchModel, TorchRoundTrip]:
    """The ONNX model as a torch module, proven to compute what ONNX Runtime computes at the
    run's input shapes."""
    from compress_engine.torch_side.convert import check_round_trip, load_torch

    model = load_torch(path, ctx.input_shapes, ctx.constants)
    return model, check_round_trip(model, path, seed=ctx.seed)


def example_inputs(model: TorchModel) -> tuple:
    from compress_engine.torch_side.convert import torch_inputs

    return torch_inputs(model.example_feed(batch=1), model.input_names, "cpu")


def training_split(ctx: PassContext, names: list[str], fraction: float, seed: int) -> Split:
    """The training samples of the inputs `names`, split for validation."""
    from compress_engine.torch_side.training import split_data

    data = ctx.data if ctx.training_data is None else ctx.training_data
    if data is None:
        raise EngineError(
            "This step trains or scores on data: give a dataset (.npz with arrays named after "
            "the model inputs or `x`, labels in `y` optional)."
        )
    return split_data(data, names, fraction, seed)


def check_up_front(
    model_path: Path, ctx: PassContext, *, trains: bool, teacher: str | None = None
) -> TorchModel | None:
    """What a torch-side step checks before any step runs (Pass.preflight). Every such step:
    its training data can be fed to a torch module (`trains`), and a teacher other than the
    original rebuilds as one that matches ONNX Runtime. The first step, whose input is the
    model itself: so does the model, at the run's shapes; returns that rebuild (None for
    later steps)."""
    from compress_engine.inspect import inspect_onnx

    inputs = inspect_onnx(model_path).inputs
    if trains:
        training_split(ctx, [t.name for t in inputs], 0.1, ctx.seed)
    if teacher is not None and teacher != "original":
        teacher_for(inputs, ctx, teacher)
    if ctx.step_index != 0:
        return None
    model, _check = load_checked(model_path, ctx)
    return model


def teacher_for(student_inputs: list[TensorInfo], ctx: PassContext, name: str) -> TorchModel:
    """The teacher rebuilt as a torch model: the original, or a named one given to the run."""
    from compress_engine.torch_side.convert import check_round_trip, load_torch

    if name == "original":
        path = ctx.original_model
    else:
        path = ctx.teachers.get(name)
        if path is None:
            known = ", ".join(["original", *ctx.teachers]) or "original"
            raise EngineError(
                f"distill.teacher {name!r} is not a model given to this run (known: {known})."
            )
    if path is None:
        raise EngineError("No teacher model is available for distillation.")
    teacher = load_torch(path, ctx.input_shapes, ctx.constants)
    if not same_inputs(teacher.info.inputs, student_inputs):
        raise EngineError(
            f"The teacher's inputs ({_show(teacher.info.inputs)}) differ from the student's "
            f"({_show(student_inputs)}); distillation feeds both the same samples."
        )
    check_round_trip(teacher, path)
    return teacher


def train_batch(student: TorchModel, teacher: TorchModel | None = None) -> int | None:
    """The batch training must run at: None (the recipe's batch_size) unless a fixed batch
    could not be freed in the student or the teacher (both see the same samples)."""
    return student.train_batch or (teacher.train_batch if teacher is not None else None)


def batch_notes(
    student: TorchModel, teacher: TorchModel | None, what: str, batch_size: int
) -> list[str]:
    """What the report says when the model's batch dimension is fixed."""
    fixed = student.fixed_batch
    if fixed is None:
        return []
    stuck = train_batch(student, teacher)
    if stuck is None:
        return [
            f"The model's batch dimension is fixed at {fixed}: {what} ran at batch_size "
            f"{batch_size} on a copy with a free batch dimension, and the result keeps the "
            f"fixed batch of {fixed}."
        ]
    problem = next(m.batch_problem for m in (student, teacher) if m and m.train_batch)
    return [
        f"The model's batch dimension is fixed at {fixed}, and its torch rebuild cannot run "
        f"at other batch sizes ({problem}), so {what} ran {stuck} sample(s) per optimiser step "
        f"instead of batch_size {batch_size}: slower, and the learning rate may not fit. "
        "Export the model with a dynamic batch dimension to train at batch_size."
    ]


def _show(inputs: list[TensorInfo]) -> str:
    return ", ".join(f"{t.name} {t.dtype} {t.shape}" for t in inputs)
