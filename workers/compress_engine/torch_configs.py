"""Recipe settings of the torch-side steps: `prune`, `distill` and `finetune`.

Like configs.py this imports only pydantic: the web app validates forms with it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PruneMethod = Literal["channel", "magnitude"]
Importance = Literal["l1", "l2", "taylor", "random"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruneConfig(_Strict):
    """Settings of a `prune:` step."""

    method: PruneMethod = Field(
        default="channel",
        description=(
            "channel: structured; whole channels (and the weights that read them) are removed "
            "from the graph, so the exported model is really smaller and faster. magnitude: "
            "unstructured; the smallest weights are set to zero, which dense ONNX Runtime "
            "kernels do not skip: the file only shrinks when compressed (a .zip is offered) and "
            "latency does not change."
        ),
    )
    amount: float = Field(
        default=0.5,
        ge=0.0,
        le=0.95,
        description=(
            "Fraction removed: of the channels of each prunable layer (channel), or of the "
            "weights (magnitude). Ignored when target_macs or target_params is set."
        ),
    )
    target_macs: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description=(
            "channel: instead of `amount`, search the amount that brings multiply-accumulates "
            "to at most this fraction of the original's, e.g. 0.5."
        ),
    )
    target_params: float | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description=(
            "channel: instead of `amount`, search the amount that brings parameters to at most "
            "this fraction of the original's, e.g. 0.3."
        ),
    )
    importance: Importance = Field(
        default="l2",
        description=(
            "How channels are ranked before the least important go: l1 or l2 norm of their "
            "weights; taylor: first-order estimate of the loss change (needs a dataset); "
            "random: a baseline."
        ),
    )
    scope: Literal["uniform", "global"] = Field(
        default="uniform",
        description=(
            "uniform: every layer loses the same fraction; global: channels are ranked across "
            "layers, so redundant layers lose more and sensitive ones less."
        ),
    )
    round_to: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description=(
            "channel: keep channel counts multiples of this (e.g. 8), which int8 and GPU "
            "kernels run fastest."
        ),
    )
    ignore: list[str] = Field(
        default_factory=list,
        description=(
            "Layers left whole, by name (ONNX node name such as `/features/0/Conv` or its "
            "torch module name). The layers that produce the model's outputs (the classifier) "
            "are always left whole, so the model's interface does not change; so are grouped "
            "convolutions whose channels cannot be removed consistently, and the layers "
            "feeding them, which the report names (channel pruning first prunes a copy at the "
            "run's input shapes and runs it)."
        ),
    )
    iterations: int = Field(
        default=1,
        ge=1,
        le=20,
        description=(
            "channel: reach `amount` in this many equal steps, recovering between steps by "
            "distilling from the unpruned model for `recover_epochs` (needs a dataset)."
        ),
    )
    recover_epochs: int = Field(
        default=1,
        ge=0,
        le=100,
        description="channel, iterations > 1: recovery epochs between pruning steps.",
    )
    seed: int = Field(default=0, ge=0, description="Seed for random importance and sampling.")

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        if self.target_macs is not None and self.target_params is not None:
            raise ValueError("set target_macs or target_params, not both")
        targeted = self.target_macs is not None or self.target_params is not None
        if self.method == "magnitude":
            if targeted:
                raise ValueError(
                    "target_macs/target_params apply to method channel: zeroed weights do "
                    "not reduce multiply-accumulates in dense kernels"
                )
            if self.iterations > 1:
                raise ValueError("iterations apply to method channel")
        self.ignore = list(dict.fromkeys(self.ignore))
        return self

    @property
    def needs_data(self) -> bool:
        # Magnitude pruning ranks weights by size alone: it never needs data.
        return self.method == "channel" and (
            self.importance == "taylor" or (self.iterations > 1 and self.recover_epochs > 0)
        )


class TrainingConfig(_Strict):
    """Optimisation settings shared by distill and finetune."""

    epochs: int = Field(default=10, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(
        default=64,
        ge=1,
        le=4096,
        description=(
            "Samples per training step, whether the model was exported with a dynamic or a "
            "fixed batch dimension: a fixed-batch model (e.g. batch 1) is trained on a copy "
            "with a free batch dimension and keeps its fixed input and output shapes in the "
            "result. Only if that copy cannot run at other batch sizes does training fall back "
            "to the fixed batch (slower; the report says why)."
        ),
    )
    lr: float = Field(default=1e-3, gt=0.0, le=10.0, description="Peak learning rate.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field(
        default="adamw",
        description="adamw (a safe default), adam, or sgd with momentum 0.9.",
    )
    weight_decay: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Weight decay (L2 for sgd, decoupled for adamw)."
    )
    schedule: Literal["cosine", "constant", "step"] = Field(
        default="cosine",
        description=(
            "Learning-rate schedule over the epochs: cosine decay to zero, constant, or step "
            "(divided by 10 at half and three quarters)."
        ),
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="Stop after this many optimiser steps in total, whatever `epochs` says.",
    )
    patience: int | None = Field(
        default=3,
        ge=1,
        le=1000,
        description=(
            "Early stopping: end after this many epochs without improvement on the validation "
            "samples; the best epoch's weights are kept either way. Unset: run every epoch."
        ),
    )
    validation_fraction: float = Field(
        default=0.1,
        ge=0.05,
        le=0.5,
        description=(
            "Share of the training split held out to pick the best epoch and stop early. The "
            "evaluation split the report scores is never trained on or used for choosing."
        ),
    )
    seed: int = Field(default=0, ge=0, description="Seed of initial order and shuffling.")
    max_gpus: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "On a worker with several GPUs, train on at most this many at once (data-parallel: "
            "one process per GPU, each on a share of every batch of batch_size). Unset: every "
            "GPU the worker offers; 1: a single GPU, as on a one-GPU worker. No effect on CPU."
        ),
    )


class DistillConfig(TrainingConfig):
    """Settings of a `distill:` step: train the current model to imitate a teacher."""

    teacher: str = Field(
        default="original",
        description=(
            "The model imitated: `original` (the uploaded model, before any step), or another "
            "model given to the job (in the platform: another version of a model)."
        ),
    )
    temperature: float = Field(
        default=4.0,
        gt=0.0,
        le=100.0,
        description="Softens both models' class scores before comparing them (classifiers).",
    )
    alpha: float = Field(
        default=0.7,
        ge=0.0,
        le=1.0,
        description=(
            "Weight of imitating the teacher; 1 - alpha weighs the task loss on labels "
            "(cross-entropy). Without labels the teacher alone is imitated."
        ),
    )
    loss: Literal["auto", "kl", "mse", "cosine"] = Field(
        default="auto",
        description=(
            "How the student is compared to the teacher. auto: kl (softened class scores) for "
            "classifiers, cosine for other outputs such as embeddings; mse: squared error."
        ),
    )
    feature_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=100.0,
        description=(
            "Also match intermediate features: squared error between teacher and student "
            "activations of same-named layers whose shapes agree, times this weight. 0 = off."
        ),
    )


class FinetuneConfig(TrainingConfig):
    """Settings of a `finetune:` step: train on the labels alone (cross-entropy)."""
