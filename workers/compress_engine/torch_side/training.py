"""The training loop behind `distill`, `finetune` and pruning recovery.

Knowledge distillation: loss = alpha * imitation(student, teacher) + (1 - alpha) * task loss
(cross-entropy on labels, when there are labels), plus optional feature matching. The best
epoch on held-out training samples is kept (epoch 0, the untrained student, included), so a
step never hands back a model worse on validation than the one it was given.

The same loop runs as one rank of a data-parallel run (see distributed.py) when given a
Collective: each rank then trains on its share of every batch and validates a share of the
held-out samples, and every figure that decides or is reported is agreed across ranks.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from compress_engine.errors import EngineError
from compress_engine.report import TorchRoundTrip, TrainingDetails, TrainingPoint
from compress_engine.torch_configs import DistillConfig, TrainingConfig
from compress_engine.torch_side.convert import as_outputs
from compress_engine.torch_side.device import TrainDevice, seed_everything

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compress_engine.data import Dataset
    from compress_engine.torch_side.distributed import Collective

Kind = Literal["distill", "finetune", "recover"]
EVAL_BATCH = 256
PROGRESS_EVERY_S = 0.5
# ...or when training has advanced this fraction since the last report, however fast the
# batches run: the bar moves within an epoch, in at most ~200 reports per run.
PROGRESS_EVERY_FRACTION = 0.005
# A tie on the validation metric counts as better only if the loss fell by this fraction.
LOSS_MIN_DELTA = 1e-3


@dataclass
class Split:
    """Training and validation samples, as arrays in the model's input order."""

    train: list[np.ndarray]
    train_labels: np.ndarray | None
    val: list[np.ndarray]
    val_labels: np.ndarray | None

    @property
    def train_samples(self) -> int:
        return len(self.train[0])

    @property
    def val_samples(self) -> int:
        return len(self.val[0])


def split_data(data: Dataset, names: list[str], fraction: float, seed: int) -> Split:
    n = data.samples
    if n < 4:
        raise EngineError(f"Training needs at least 4 samples in the training split; it has {n}.")
    order = np.random.default_rng([seed, 11]).permutation(n)
    n_val = max(1, round(n * fraction))
    val, train = order[:n_val], order[n_val:]
    arrays = data.samples_first(names, "Training (prune, distill, finetune)")
    labels = data.labels
    return Split(
        train=[a[train] for a in arrays],
        train_labels=None if labels is None else labels[train],
        val=[a[val] for a in arrays],
        val_labels=None if labels is None else labels[val],
    )


@dataclass
class Trainer:
    """One training run: student (trained in place), optional teacher, data and settings."""

    student: nn.Module
    teacher: nn.Module | None
    split: Split
    cfg: TrainingConfig
    kind: Kind
    device: TrainDevice
    step_index: int = 0
    fixed_batch: int | None = None
    on_point: Callable[[TrainingPoint], None] | None = None
    progress: Callable[[float], None] = lambda _f: None
    teacher_name: str | None = None
    epochs: int | None = None  # overrides cfg.epochs (pruning recovery)
    dist: Collective | None = None  # set on each rank of a data-parallel run

    def __post_init__(self) -> None:
        labels = self.split.train_labels is not None
        if self.kind == "finetune" and not labels:
            raise EngineError(
                "finetune trains on labels, and this dataset has none (add `y` or `labels` to "
                "the .npz); use distill, which works without labels."
            )
        if self.kind != "finetune" and self.teacher is None:
            raise EngineError("Distillation needs a teacher model.")
        cfg = self.cfg
        self.alpha = cfg.alpha if isinstance(cfg, DistillConfig) else 0.0
        if self.kind == "recover":
            self.alpha = 1.0
        if not labels:
            self.alpha = 1.0
        loss = cfg.loss if isinstance(cfg, DistillConfig) else "auto"
        self.imitation = ("kl" if labels else "cosine") if loss == "auto" else loss
        self.temperature = cfg.temperature if isinstance(cfg, DistillConfig) else 1.0
        self.feature_weight = cfg.feature_weight if isinstance(cfg, DistillConfig) else 0.0
        self.metric: Literal["accuracy", "cosine"] = "accuracy" if labels else "cosine"
        self.world = self.dist.size if self.dist else 1
        # Samples per optimiser step over all ranks: batch_size, or a fixed-batch model's
        # batch on every rank.
        self.batch = self.fixed_batch * self.world if self.fixed_batch else cfg.batch_size

    # --- public -------------------------------------------------------------------------

    def describe_loss(self) -> str:
        if self.kind == "finetune":
            return "cross-entropy on labels"
        what = {
            "kl": f"KL divergence of class scores softened at T={self.temperature:g}",
            "mse": "mean squared error to the teacher's outputs",
            "cosine": "1 - cosine similarity to the teacher's outputs",
        }[self.imitation]
        parts = [f"{self.alpha:g} x {what}"]
        if self.alpha < 1:
            parts.append(f"{1 - self.alpha:g} x cross-entropy on labels")
        if self.feature_weight > 0:
            parts.append(f"{self.feature_weight:g} x feature MSE (same-shaped layers)")
        return " + ".join(parts)

    def run(self, round_trip: TorchRoundTrip) -> TrainingDetails:
        import torch

        seed_everything(self.cfg.seed)
        dev = self.device.device
        self.student.to(dev)
        if self.teacher is not None:
            self.teacher.to(dev).eval()
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        params = [p for p in self.student.parameters() if p.requires_grad]
        if not params:
            raise EngineError("The model has no trainable weights.")
        # Forward passes that train go through DistributedDataParallel on a rank, which
        # averages the gradients across ranks in backward.
        self._trained = self.dist.wrap(self.student) if self.dist else self.student
        epochs = self.epochs or self.cfg.epochs
        n = self.split.train_samples
        # A last, partial batch is kept if every rank gets a sample of it (one process: always).
        partial = 0 if self.fixed_batch else int(n % self.batch >= self.world)
        per_epoch = n // self.batch + partial
        if per_epoch == 0:
            if self.fixed_batch:
                raise EngineError(
                    f"The training split has {n} samples, fewer than the model's fixed batch "
                    f"size {self.fixed_batch}"
                    + (f" times {self.world} processes." if self.world > 1 else ".")
                )
            raise EngineError(
                f"The training split has {n} samples, fewer than the {self.world} processes "
                "that share each batch."
            )
        total = per_epoch * epochs
        if self.cfg.max_steps is not None:
            total = min(total, self.cfg.max_steps)
        opt = _optimizer(self.cfg, params)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(self.cfg.schedule, total))
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.autocast_dtype == torch.float16)
        self._teacher_val = self._teacher_outputs(self.split.val)
        self._hooks = _FeatureHooks(self.student, self.teacher) if self.feature_weight else None

        start = time.perf_counter()
        before, best_loss = self.validate_with_loss()
        best, best_epoch, best_state = before, 0, copy.deepcopy(self.student.state_dict())
        history = [self._point(0, 0, None, before, opt, start, None)]
        self._emit(history[-1])
        gen = torch.Generator().manual_seed(self.cfg.seed)
        steps, stale, stopped_early, step_time = 0, 0, False, 0.0
        last_progress = last_fraction = 0.0
        epoch = 0
        for epoch in range(1, epochs + 1):
            self._trained.train()
            losses = []
            order = torch.randperm(n, generator=gen).numpy()
            for b in range(per_epoch):
                if steps >= total:
                    break
                idx = order[b * self.batch : (b + 1) * self.batch]
                t0 = time.perf_counter()
                if self.dist is None:
                    loss = self._loss(idx)
                else:
                    mine, weight = self.dist.share(idx)
                    loss = self._loss(mine) * weight
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                step_time += time.perf_counter() - t0
                steps += 1
                losses.append(float(loss.detach()))
                # (An epoch's last batch is reported after its validation, below.)
                if b < per_epoch - 1 and (
                    time.perf_counter() - last_progress > PROGRESS_EVERY_S
                    or steps / total - last_fraction >= PROGRESS_EVERY_FRACTION
                ):
                    last_progress, last_fraction = time.perf_counter(), steps / total
                    self.progress(last_fraction)
            metric, val_loss = self.validate_with_loss()
            eta = (time.perf_counter() - start) / steps * (total - steps) if steps else None
            if self.dist is not None and losses:
                losses = self.dist.mean_over_ranks(losses)
            mean_loss = float(np.mean(losses)) if losses else None
            history.append(self._point(epoch, steps, mean_loss, metric, opt, start, eta))
            self._emit(history[-1])
            # Every epoch moves the stage bar, however short: throttled step reports alone
            # leave a fast run's bar at its first step while the curve shows later epochs.
            self.progress(steps / total)
            last_progress, last_fraction = time.perf_counter(), steps / total
            # Ties on the metric (a small validation set saturates at 100%) go to the lower
            # validation loss, so training past the first perfect epoch still counts.
            if metric > best or (metric == best and val_loss < best_loss * (1 - LOSS_MIN_DELTA)):
                best, best_loss, best_epoch, stale = metric, val_loss, epoch, 0
                best_state = copy.deepcopy(self.student.state_dict())
            else:
                stale += 1
            if steps >= total:
                break
            if self.cfg.patience is not None and stale >= self.cfg.patience:
                stopped_early = epoch < epochs
                break
        if self._hooks is not None:
            self._hooks.remove()
        self._trained = self.student  # drops the DistributedDataParallel wrapper
        self.student.load_state_dict(best_state)
        self.student.cpu().eval()
        if self.teacher is not None:
            self.teacher.cpu()
        self.progress(1.0)
        return TrainingDetails(
            kind="finetune" if self.kind == "finetune" else "distill",
            teacher=self.teacher_name,
            loss=self.describe_loss(),
            device=self.dist.describe(self.device) if self.dist else self.device.description,
            mixed_precision=self.device.mixed_precision,
            world_size=self.world,
            backend=self.dist.backend if self.dist else None,
            train_samples=n,
            validation_samples=self.split.val_samples,
            metric=self.metric,
            before=before,
            best=best,
            best_epoch=best_epoch,
            epochs_run=epoch,
            stopped_early=stopped_early,
            optimizer_steps=steps,
            seconds_per_step=step_time / steps if steps else 0.0,
            history=history,
            round_trip=round_trip,
        )

    def validate_with_loss(self) -> tuple[float, float]:
        """(metric, loss) on the validation samples: top-1 accuracy in % with labels, else
        mean cosine to the teacher's outputs; the loss is the training objective's."""
        import torch
        import torch.nn.functional as F

        outs = self._outputs(self.student, self.split.val, shared=True)
        labels = None
        if self.split.val_labels is not None:
            labels = torch.from_numpy(self.split.val_labels).to(outs.device)
        loss = torch.zeros((), device=outs.device)
        if labels is not None and self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(_as_scores(outs), labels)
        if self.alpha > 0 and self._teacher_val is not None:
            loss = loss + self.alpha * self._imitation(outs, self._teacher_val)
        if self.metric == "accuracy":
            assert labels is not None
            metric = float((outs.argmax(-1) == labels).float().mean() * 100)
        else:
            metric = float(_cosine(outs, self._teacher_val).mean())
        if self.dist is not None:  # every rank decides on rank 0's figures
            metric, agreed_loss = self.dist.agree([metric, float(loss)])
            return metric, agreed_loss
        return metric, float(loss)

    # --- internals ------------------------------------------------------------------------

    def _loss(self, idx: np.ndarray) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        dev = self.device.device
        xs = [torch.from_numpy(a[idx]).to(dev) for a in self.split.train]
        labels = self.split.train_labels
        with torch.autocast(
            dev.type, dtype=self.device.autocast_dtype or torch.float32,
            enabled=self.device.autocast_dtype is not None,
        ):  # fmt: skip
            student = as_outputs(self._trained(*xs))[0].float()
            loss = torch.zeros((), device=dev)
            if self.alpha < 1 and labels is not None:
                y = torch.from_numpy(labels[idx]).to(dev)
                loss = loss + (1 - self.alpha) * F.cross_entropy(_as_scores(student), y)
            if self.alpha > 0 and self.teacher is not None:
                with torch.no_grad():
                    teacher = as_outputs(self.teacher(*xs))[0].float()
                loss = loss + self.alpha * self._imitation(student, teacher)
                if self._hooks is not None:
                    loss = loss + self.feature_weight * self._hooks.loss()
        return loss

    def _imitation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.imitation == "kl":
            t = self.temperature
            s, te = _as_scores(student), _as_scores(teacher)
            return F.kl_div(
                F.log_softmax(s / t, dim=-1), F.log_softmax(te / t, dim=-1),
                reduction="batchmean", log_target=True,
            ) * (t * t)  # fmt: skip
        if self.imitation == "mse":
            return F.mse_loss(student, teacher)
        return (1 - _cosine(student, teacher)).mean()

    def _outputs(
        self, module: nn.Module, arrays: list[np.ndarray], shared: bool = False
    ) -> torch.Tensor:
        """`module`'s first output for every sample; `shared`: on a rank, each rank runs its
        share of the samples and all ranks get all outputs."""
        import torch

        if shared and self.dist is not None:
            total = len(arrays[0])
            mine = self._outputs(module, [a[self.dist.rows(total)] for a in arrays])
            return self.dist.gather_rows(mine, total)
        module.eval()
        batch = self.fixed_batch or EVAL_BATCH
        n = len(arrays[0])
        chunks = []
        with torch.no_grad():
            for start in range(0, n, batch):
                xs = [a[start : start + batch] for a in arrays]
                real = len(xs[0])
                if self.fixed_batch and real < batch:  # pad the last batch to the fixed size
                    xs = [np.concatenate([x, np.repeat(x[-1:], batch - real, 0)]) for x in xs]
                out = as_outputs(module(*[torch.from_numpy(x).to(self.device.device) for x in xs]))
                chunks.append(out[0].float()[:real])
        return torch.cat(chunks)

    def _teacher_outputs(self, arrays: list[np.ndarray]) -> torch.Tensor | None:
        if self.teacher is None:
            return None
        out = self._outputs(self.teacher, arrays, shared=True)
        student = self._outputs(self.student, [a[:1] for a in arrays])
        if out.shape[1:] != student.shape[1:]:
            raise EngineError(
                f"The teacher's first output has shape {list(out.shape[1:])} per sample, the "
                f"student's {list(student.shape[1:])}; distillation needs them to match."
            )
        return out

    def _point(
        self, epoch: int, steps: int, loss: float | None, metric: float, opt: Any, start: float,
        eta: float | None,
    ) -> TrainingPoint:  # fmt: skip
        return TrainingPoint(
            step=self.step_index,
            kind=self.kind,
            epoch=epoch,
            optimizer_steps=steps,
            train_loss=loss,
            val_metric=metric,
            metric=self.metric,
            lr=float(opt.param_groups[0]["lr"]),
            elapsed_s=time.perf_counter() - start,
            eta_s=eta,
        )

    def _emit(self, point: TrainingPoint) -> None:
        if self.on_point is not None:
            self.on_point(point)


def _as_scores(t: torch.Tensor) -> torch.Tensor:
    # Class scores along the last dim; any leading dims become extra rows.
    return t.reshape(-1, t.shape[-1]) if t.dim() != 2 else t


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.cosine_similarity(a.reshape(len(a), -1), b.reshape(len(b), -1), dim=1, eps=1e-8)


def _optimizer(cfg: TrainingConfig, params: list) -> Any:
    import torch

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _schedule(kind: str, total: int) -> Callable[[int], float]:
    if kind == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    if kind == "step":
        return lambda step: 1.0 if step < total / 2 else (0.1 if step < total * 3 / 4 else 0.01)
    return lambda _step: 1.0


class _FeatureHooks:
    """Matches activations of the i-th Conv/Linear of teacher and student where shapes agree."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None) -> None:
        from compress_engine.torch_side.pruning import prunable_layers

        self.s: dict[int, Any] = {}
        self.t: dict[int, Any] = {}
        self.handles = []
        if teacher is None:
            return
        for store, module in ((self.s, student), (self.t, teacher)):
            for i, layer in enumerate(prunable_layers(module).values()):
                self.handles.append(layer.register_forward_hook(_recorder(store, i)))

    def loss(self) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        terms = [
            F.mse_loss(self.s[i].float(), self.t[i].float())
            for i in self.s
            if i in self.t and self.s[i].shape == self.t[i].shape
        ]
        if not terms:
            return torch.zeros((), device=next(iter(self.s.values()), torch.zeros(())).device)
        return torch.stack(terms).mean()

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _recorder(store: dict[int, Any], index: int) -> Callable:
    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        store[index] = output

    return hook
