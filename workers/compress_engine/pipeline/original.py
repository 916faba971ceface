"""Stage 1: load and measure the original model, and set up what later stages compare with
(its session, seeded feeds per batch size, static figures, the data splits, the scorer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.data import Dataset
from compress_engine.errors import short_message
from compress_engine.inspect import ModelInfo, inspect_onnx
from compress_engine.measure.figures import static_figures
from compress_engine.measure.inputs import batch_dim_dynamic, random_feed, resolve_shapes
from compress_engine.pipeline.compare import make_scorer
from compress_engine.pipeline.sessions import batch_of, open_session, run_once, shapes_at
from compress_engine.pipeline.splits import DataSplits
from compress_engine.pipeline.state import Run
from compress_engine.tuning import Budget, Scorer, resolve_budget

if TYPE_CHECKING:
    import onnxruntime

Feed = dict[str, np.ndarray]


@dataclass
class Original:
    """What measuring the original hands on to the later stages."""

    info: ModelInfo
    shapes: dict[str, list[int]]  # per input, at evaluate.batch_size (or the fixed batch)
    batch: int  # samples per run at those shapes
    dynamic_batch: bool
    # Seeded random feeds per batch size, only those the original runs at; the first is the
    # headline batch size.
    feeds: dict[int, Feed]
    session: onnxruntime.InferenceSession
    macs_shapes: dict[str, list[int]]  # shapes MACs are counted at (batch 1 if dynamic)
    figures: dict[str, Any]  # static_figures of the file
    data: DataSplits | None
    budget: Budget | None
    scorer: Scorer

    @property
    def batch_sizes(self) -> list[int]:
        return list(self.feeds)

    @property
    def feed(self) -> Feed:
        """The feed at the headline batch size."""
        return self.feeds[self.batch_sizes[0]]


def measure_original(run: Run, dataset: Dataset | None) -> Original:
    run.tracker.stage(
        "Measuring original model", run.layout.measure_original, run.layout.steps[0][0]
    )
    ev = run.ev
    with run.timed("Measure original"):
        info = inspect_onnx(run.model)
        shapes = resolve_shapes(info.inputs, ev.batch_size, ev.input_shapes)
        data = None if dataset is None else DataSplits(dataset, info, ev)
        budget = resolve_budget(ev, labels=data is not None and data.dataset.labels is not None)
        batch = batch_of(info, shapes)
        dynamic_batch = any(batch_dim_dynamic(t) for t in info.inputs if shapes[t.name])
        batch_sizes = list(dict.fromkeys([batch, *ev.batch_sizes])) if dynamic_batch else [batch]
        feeds = {
            b: random_feed(
                info.inputs, shapes_at(info, shapes, b), np.random.default_rng([ev.seed, 0, b])
            )
            for b in batch_sizes
        }
        session = open_session(
            run.model, run.providers, run.threads, "ONNX Runtime cannot load the original model"
        )
        run_once(
            session,
            feeds[batch_sizes[0]],
            "ONNX Runtime cannot run the original model on random inputs of shapes "
            f"{shapes} (set evaluate.input_shapes if these do not fit)",
        )
        _drop_failing_batches(session, feeds, run.notes)
        run.tracker.sub(0.5)
        macs_shapes = shapes_at(info, shapes, 1) if dynamic_batch else dict(shapes)
        figures = static_figures(run.model, macs_shapes)
        scorer = make_scorer(session, info, shapes, ev, data, run.providers, run.threads)
    return Original(
        info=info,
        shapes=shapes,
        batch=batch,
        dynamic_batch=dynamic_batch,
        feeds=feeds,
        session=session,
        macs_shapes=macs_shapes,
        figures=figures,
        data=data,
        budget=budget,
        scorer=scorer,
    )


def _drop_failing_batches(
    session: onnxruntime.InferenceSession, feeds: dict[int, Feed], notes: list[str]
) -> None:
    # Extra batch sizes are a bonus: a graph that bakes in its batch size (a Reshape to
    # [1, ...]) is timed at the first one only.
    for b in list(feeds)[1:]:
        try:
            session.run(None, feeds[b])
        except Exception as exc:
            notes.append(
                f"The original model does not run at batch {b} ({short_message(exc)}), so "
                "latency was not timed at that batch size."
            )
            del feeds[b]
