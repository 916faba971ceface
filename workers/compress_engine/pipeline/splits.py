"""A dataset bound to the model and split into calibration, training and evaluation samples.

The recipe's evaluate.sample_axis and evaluate.constants apply first, then Dataset.for_model
puts every array's samples on its input's batch axis; every batch cut from a split (scoring,
calibration, timing) therefore feeds the model as it is, constants included.
"""

from __future__ import annotations

import numpy as np

from compress_engine.configs import EvaluateConfig
from compress_engine.data import Dataset
from compress_engine.data_layout import batch_axes, is_fixed
from compress_engine.inspect import ModelInfo
from compress_engine.report import DataSummary

# Samples per run when feeding a dataset to a model with a dynamic batch dimension.
DATA_BATCH = 32


class DataSplits:
    """The run's dataset, split with evaluate's fractions and seed; without
    evaluate.training_fraction, training is the calibration split."""

    def __init__(self, dataset: Dataset, info: ModelInfo, ev: EvaluateConfig) -> None:
        self.dataset = dataset.with_recipe(ev.sample_axis, ev.constants).for_model(info.inputs)
        if ev.training_fraction is None:
            self.calibration, evaluation = self.dataset.split(ev.calibration_fraction, seed=ev.seed)
            self.training = self.calibration
        else:
            self.calibration, self.training, evaluation = self.dataset.split(
                ev.calibration_fraction, ev.training_fraction, seed=ev.seed
            )
        self.evaluation = evaluation.take(slice(0, ev.max_evaluation_samples))
        axes = batch_axes(info.inputs)
        lead = next((t.shape[a] for t in info.inputs if (a := axes[t.name]) is not None), None)
        # A fixed batch dim must be fed exactly to ONNX Runtime (calibration, scoring);
        # leftover samples are dropped. Training steps use their recipe's batch_size instead,
        # whatever the model's batch (torch_side/batch_dim.py).
        self.batch_size = lead if is_fixed(lead) else DATA_BATCH
        self.drop_last = is_fixed(lead)

    @property
    def separate_training(self) -> bool:
        return self.training is not self.calibration

    def summary(self, seed: int) -> DataSummary:
        return DataSummary(
            samples=self.dataset.samples,
            calibration_samples=self.calibration.samples,
            training_samples=self.training.samples if self.separate_training else None,
            evaluation_samples=self.evaluation.samples,
            labels=self.dataset.labels is not None,
            seed=seed,
            classes=list(self.dataset.classes),
            preprocessing=self.dataset.description,
        )

    def evaluation_batches(self) -> list[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        return list(self.evaluation.batches(self.batch_size, drop_last=self.drop_last))
