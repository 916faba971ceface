"""`prune:` structured channel pruning (torch-pruning) or unstructured magnitude pruning."""

from __future__ import annotations

import zipfile
from pathlib import Path

from compress_engine.passes.base import Pass, PassContext, PassInfo, PassResult
from compress_engine.passes.registry import register
from compress_engine.passes.torch_common import (
    batch_notes,
    check_up_front,
    example_inputs,
    load_checked,
    teacher_for,
    train_batch,
    training_split,
)
from compress_engine.report import PruningDetails
from compress_engine.torch_configs import DistillConfig, PruneConfig


@register
class Prune(Pass[PruneConfig]):
    info = PassInfo(
        name="prune",
        title="Pruning",
        stage="Pruning",
        description=(
            "Removes whole channels (method channel: the exported model is really smaller and "
            "faster) or zeroes the smallest weights (magnitude: smaller only when zipped). "
            "Follow it with distill to win back accuracy."
        ),
        step="prune",
        needs_data=False,
        needs_labels=False,
        compute="heavy",
    )
    config_type = PruneConfig

    def preflight(self, model_path: Path, ctx: PassContext) -> None:
        """The torch copy must match ONNX Runtime at the run's shapes, and channel pruning
        must find a consistent way to prune a copy of it (a dry run)."""
        from compress_engine.torch_side import pruning

        model = check_up_front(model_path, ctx, trains=self.config.needs_data)
        if model is not None and self.config.method == "channel":
            plan = pruning.ChannelPlan(example=example_inputs(model), names=model.node_names)
            pruning.keep_consistent(model.module, self.config, plan)

    def run(self, model_path: Path, out_path: Path, ctx: PassContext) -> PassResult:
        from compress_engine.torch_side import pruning
        from compress_engine.torch_side.convert import check_runs_on, export_onnx

        cfg: PruneConfig = self.config
        model, check = load_checked(model_path, ctx)
        module = model.module
        example = example_inputs(model)
        plan = pruning.ChannelPlan(example=example, names=model.node_names)
        if cfg.method == "channel":
            pruning.keep_consistent(module, cfg, plan)
        macs0, params0 = pruning.count(module, example)
        notes: list[str] = []
        extras: list[tuple[str, Path]] = []
        if cfg.method == "magnitude":
            layers = pruning.magnitude_prune(module, cfg, model.node_names)
            amount, target, ignored = cfg.amount, None, list(cfg.ignore)
            params1 = params0 - sum(layer.before - layer.after for layer in layers)
            macs1 = macs0
            notes.append(
                f"Magnitude pruning set {cfg.amount:.0%} of the weights to zero. Dense ONNX "
                "Runtime kernels still multiply by those zeros, so the .onnx file's size and "
                "latency do not change; the zipped copy shows the storage saving."
            )
        else:
            ctx.progress(0.1)
            # One split serves both uses of data: taylor scoring and recovery.
            split = (
                training_split(ctx, model.input_names, 0.1, cfg.seed) if cfg.needs_data else None
            )
            if split is not None:
                check_runs_on(model, split.train)
            if cfg.importance == "taylor":
                plan.loss_fn = _taylor_loss(split, model)
            if cfg.iterations > 1 and cfg.recover_epochs > 0:
                plan.recover, recover_notes = _recoverer(ctx, model, split, cfg)
                notes += recover_notes
            before = pruning.channel_counts(module)
            kept = [*pruning.resolve_ignored(module, cfg, model.node_names), *plan.whole]
            ignored = [model.node_names.get(n, n) for n in dict.fromkeys(kept)]
            amount, target = pruning.channel_prune(module, cfg, plan)
            layers = pruning.layer_changes(before, pruning.channel_counts(module), model.node_names)
            macs1, params1 = pruning.count(module, example)
            notes += _rounding_note(layers, ignored, amount, cfg.round_to)
            if (whole := pruning.whole_note(plan)) is not None:
                notes.append(whole)
        ctx.progress(0.8)
        export_onnx(model, out_path)
        if cfg.method == "magnitude":
            zipped = out_path.with_suffix(".onnx.zip")
            with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.write(out_path, arcname="model.onnx")
            extras.append(("onnx-zip", zipped))
        ctx.progress(1.0)
        details = PruningDetails(
            method=cfg.method,
            importance="l1 magnitude" if cfg.method == "magnitude" else cfg.importance,
            scope=cfg.scope,
            amount=amount,
            round_to=cfg.round_to,
            iterations=cfg.iterations,
            target=target,
            search=plan.search if cfg.method == "channel" else [],
            parameters_before=params0,
            parameters_after=params1,
            macs_before=macs0,
            macs_after=macs1,
            layers=layers,
            ignored=ignored,
            round_trip=check,
        )
        return PassResult(
            model_path=out_path,
            suffix="pruned" if cfg.method == "channel" else "sparse",
            precision="fp32",
            details=details,
            notes=notes,
            extras=extras,
        )


def _rounding_note(layers, ignored, amount, round_to):  # type: ignore[no-untyped-def]
    """Say so when round_to made the channels removed differ much from the amount asked."""
    pruned = [layer for layer in layers if layer.name not in ignored]
    before = sum(layer.before for layer in pruned)
    if not round_to or not before:
        return []
    removed = 1 - sum(layer.after for layer in pruned) / before
    if abs(removed - amount) < 0.05:
        return []
    return [
        f"With round_to {round_to}, {removed:.0%} of the prunable layers' channels were removed "
        f"(asked: {amount:.0%}): channel counts are rounded to multiples of {round_to}."
    ]


def _taylor_loss(split, model):  # type: ignore[no-untyped-def]
    """Loss whose gradients score channels: cross-entropy with labels, else output energy."""

    def loss_fn(module):  # type: ignore[no-untyped-def]
        import torch
        import torch.nn.functional as F

        from compress_engine.torch_side.convert import as_outputs

        # At most 256 samples at once, or the fixed batch the module could not be freed of.
        n = model.train_batch or min(256, split.train_samples)
        xs = [torch.from_numpy(a[:n]) for a in split.train]
        # Eval mode: gradients flow all the same, and BatchNorm statistics stay untouched.
        module.eval()
        out = as_outputs(module(*xs))[0].float()
        if split.train_labels is not None:
            labels = torch.from_numpy(split.train_labels[:n])
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), labels)
        return out.pow(2).mean()

    return loss_fn


def _recoverer(ctx: PassContext, model, split, cfg: PruneConfig):  # type: ignore[no-untyped-def]
    """Between iterative pruning steps: distil from the unpruned model for a few epochs.
    Returns the recovery and what the report says about its batch."""
    from compress_engine.torch_side.device import pick_device
    from compress_engine.torch_side.distributed import fit
    from compress_engine.torch_side.training import Trainer

    teacher = teacher_for(model.info.inputs, ctx, "original")
    distill = DistillConfig(epochs=cfg.recover_epochs, patience=None, seed=cfg.seed)

    def recover(module, i: int) -> None:  # type: ignore[no-untyped-def]
        trainer = Trainer(
            student=module,
            teacher=teacher.module,
            split=split,
            cfg=distill,
            kind="recover",
            device=pick_device(),
            step_index=ctx.step_index,
            fixed_batch=train_batch(model, teacher),
            on_point=ctx.on_training,
            epochs=cfg.recover_epochs,
        )
        # On every GPU of the worker, as its policy (MODELPRESS_DDP) says.
        fit(trainer, None, max_gpus=None, work_dir=ctx.work_dir / f"recover{i}")

    return recover, batch_notes(model, teacher, "recovery", distill.batch_size)
