"""The result against the original on the evaluation split (or seeded random inputs): the
report's fidelity and accuracy, and the scorer that tuning passes judge candidates with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.configs import EvaluateConfig
from compress_engine.inspect import ModelInfo
from compress_engine.measure.accuracy import AccuracyCounter
from compress_engine.measure.fidelity import OnOutputs, compare_outputs
from compress_engine.measure.inputs import fidelity_batches
from compress_engine.pipeline.sessions import random_feeds
from compress_engine.pipeline.splits import DataSplits
from compress_engine.quality import sample_floor
from compress_engine.report import Accuracy, Fidelity
from compress_engine.tuning import Scorer

if TYPE_CHECKING:
    import onnxruntime


def compare(
    original: onnxruntime.InferenceSession,
    result: onnxruntime.InferenceSession,
    info: ModelInfo,
    shapes: Mapping[str, list[int]],
    ev: EvaluateConfig,
    data: DataSplits | None,
    progress: Callable[[float], None],
    notes: list[str],
    on_outputs: OnOutputs | None = None,
) -> tuple[Fidelity, Accuracy | None]:
    """Fidelity (and, with labels, accuracy) on the evaluation split, else on random inputs.

    on_outputs sees every batch's feed and outputs, for another comparison in the same pass.
    """
    batches = [] if data is None else data.evaluation_batches()
    if not batches:
        random_batches = fidelity_batches(info.inputs, shapes, ev.fidelity_samples)
        fidelity = compare_outputs(
            original,
            result,
            random_feeds(info, random_batches, ev.seed, ev.constants),
            total=len(random_batches),
            progress=progress,
            on_outputs=on_outputs,
            sample_floor=sample_floor(ev.quality_floor),
        )
        return fidelity, None
    labelled = all(labels is not None for _, labels in batches)
    counter = AccuracyCounter(output=original.get_outputs()[0].name)

    def score(
        index: int, feed: Mapping[str, np.ndarray], ref: list[np.ndarray], got: list[np.ndarray]
    ) -> None:
        labels = batches[index][1]
        if labelled and labels is not None:
            counter.add(ref[0], got[0], labels)
        if on_outputs is not None:
            on_outputs(index, feed, ref, got)

    fidelity = compare_outputs(
        original,
        result,
        (feed for feed, _ in batches),
        total=len(batches),
        progress=progress,
        on_outputs=score,
        sample_floor=sample_floor(ev.quality_floor),
    )
    fidelity.inputs = "evaluation split"
    if counter.skipped is not None:
        notes.append(counter.skipped)
    return fidelity, counter.summary()


def make_scorer(
    original: onnxruntime.InferenceSession,
    info: ModelInfo,
    shapes: Mapping[str, list[int]],
    ev: EvaluateConfig,
    data: DataSplits | None,
    providers: list[str],
    threads: int,
) -> Scorer:
    """Scores candidates on the batches the report's fidelity uses (evaluation split or the
    seeded random inputs), so a trial's metric and the final report agree."""
    batches: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = (
        [] if data is None else data.evaluation_batches()
    )
    if not batches:
        random_batches = fidelity_batches(info.inputs, shapes, ev.fidelity_samples)
        batches = [(f, None) for f in random_feeds(info, random_batches, ev.seed, ev.constants)]
    return Scorer(original, batches, providers=providers, threads=threads)
