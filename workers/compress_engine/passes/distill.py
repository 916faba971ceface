"""`distill:` knowledge distillation from a teacher, and `finetune:` training on labels."""

from __future__ import annotations

from pathlib import Path

from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.registry import register
from compress_engine.passes.torch_common import (
    batch_notes,
    check_up_front,
    load_checked,
    teacher_for,
    train_batch,
    training_split,
)
from compress_engine.torch_configs import DistillConfig, FinetuneConfig, TrainingConfig


def _train(
    pass_: Pass, model_path: Path, out_path: Path, ctx: PassContext, kind: str
) -> PassResult:
    from compress_engine.torch_side.convert import check_runs_on, export_onnx
    from compress_engine.torch_side.device import pick_device
    from compress_engine.torch_side.distributed import fit
    from compress_engine.torch_side.training import Trainer

    cfg: TrainingConfig = pass_.config  # type: ignore[assignment]
    model, check = load_checked(model_path, ctx)
    split = training_split(ctx, model.input_names, cfg.validation_fraction, cfg.seed)
    teacher_name = cfg.teacher if isinstance(cfg, DistillConfig) else None
    teacher = teacher_for(model.info.inputs, ctx, teacher_name) if teacher_name else None
    # A layer that cannot take the dataset's shapes names itself now, not mid-epoch.
    for rebuilt in (model, teacher):
        if rebuilt is not None:
            check_runs_on(rebuilt, split.train)
    trainer = Trainer(
        student=model.module,
        teacher=teacher.module if teacher else None,
        split=split,
        cfg=cfg,
        kind=kind,  # type: ignore[arg-type]
        device=pick_device(),
        step_index=ctx.step_index,
        # A fixed exported batch is freed for training; the export below keeps it.
        fixed_batch=train_batch(model, teacher),
        on_point=ctx.on_training,
        progress=lambda f: ctx.progress(0.95 * f),
        teacher_name=teacher_name,
    )
    details, world = fit(trainer, check, max_gpus=cfg.max_gpus, work_dir=ctx.work_dir)
    export_onnx(model, out_path)
    ctx.progress(1.0)
    notes = [world.note] if world.note else []
    notes += batch_notes(model, teacher, pass_.info.title.lower(), cfg.batch_size)
    if details.best_epoch == 0:
        notes.append(
            f"{pass_.info.title} did not improve the validation {details.metric} "
            f"({details.before:.4g}) in {details.epochs_run} epochs, so the model was kept as "
            "it came in; try more epochs or another learning rate."
        )
    return PassResult(
        model_path=out_path,
        suffix="distilled" if kind == "distill" else "finetuned",
        precision="fp32",
        details=details,
        notes=notes,
    )


@register
class Distill(Pass[DistillConfig]):
    info = PassInfo(
        name="distill",
        title="Distillation",
        stage="Distilling",
        description=(
            "Trains the current (e.g. pruned) model to imitate a teacher, by default the "
            "original model, on the dataset's training split; labels are used when present, "
            "not required. Keeps the best epoch on held-out training samples."
        ),
        step="distill",
        needs_data=True,
        needs_labels=False,
        compute="heavy",
    )
    config_type = DistillConfig

    def preflight(self, model_path: Path, ctx: PassContext) -> None:
        check_up_front(model_path, ctx, trains=True, teacher=self.config.teacher)

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        return _train(self, model_path, out_path, ctx, "distill")


@register
class Finetune(Pass[FinetuneConfig]):
    info = PassInfo(
        name="finetune",
        title="Fine-tuning",
        stage="Fine-tuning",
        description=(
            "Trains the current model on the dataset's labels (cross-entropy), e.g. to recover "
            "after pruning; distill usually recovers more. Keeps the best epoch."
        ),
        step="finetune",
        needs_data=True,
        needs_labels=True,
        compute="heavy",
    )
    config_type = FinetuneConfig

    def preflight(self, model_path: Path, ctx: PassContext) -> None:
        check_up_front(model_path, ctx, trains=True)

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        return _train(self, model_path, out_path, ctx, "finetune")
