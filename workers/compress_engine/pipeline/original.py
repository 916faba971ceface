"""Stage 1: load and measure the original model, and set up what later stages compare with
(its session, seeded feeds per batch size, static figures, the data splits, the scorer)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.data import Dataset
from compress_engine.errors import EngineError, short_message
from compress_engine.inspect import ModelInfo, inspect_onnx
from compress_engine.measure.figures import static_figures
from compress_engine.measure.inputs import (
    DEFAULT_DYNAMIC_DIM,
    LARGER_GUESSES,
    batch_dim_dynamic,
    guessed_scalars_note,
    random_feed,
    random_input_hint,
)
from compress_engine.measure.timed_shapes import ShapeSource, TimedShapes, timed_shapes
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
    shape_sources: dict[str, ShapeSource]  # per input: what fixed its free dims
    batch: int  # samples per run at those shapes
    dynamic_batch: bool
    # Timing feeds per batch size, only those the original runs at (the first is the headline
    # batch size): the dataset's first samples where it has enough at these shapes, else
    # seeded random inputs.
    feeds: dict[int, Feed]
    session: onnxruntime.InferenceSession
    # A second session of the same file: timed beside the original and the result, it shows
    # how far identical models time apart (the noise band of every latency ratio).
    copy: onnxruntime.InferenceSession
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
        data = None if dataset is None else DataSplits(dataset, info, ev)
        cannot_load = "ONNX Runtime cannot load the original model"
        session = open_session(run.model, run.providers, run.threads, cannot_load)
        copy = open_session(run.model, run.providers, run.threads, cannot_load)
        timed, batch, dynamic_batch, feeds = _shapes_that_run(session, info, ev, data)
        shapes = timed.shapes
        note = timed.default_note()
        if note is not None:
            run.notes.append(note)
        budget = resolve_budget(ev, labels=data is not None and data.dataset.labels is not None)
        if data is None and (guessed := guessed_scalars_note(info.inputs, ev.constants)):
            run.notes.append(guessed)
        _drop_failing_batches(session, feeds, run.notes)
        run.tracker.sub(0.5)
        macs_shapes = shapes_at(info, shapes, 1) if dynamic_batch else dict(shapes)
        figures = static_figures(run.model, macs_shapes)
        scorer = make_scorer(session, info, shapes, ev, data, run.providers, run.threads)
    return Original(
        info=info,
        shapes=shapes,
        shape_sources=timed.sources,
        batch=batch,
        dynamic_batch=dynamic_batch,
        feeds=feeds,
        session=session,
        copy=copy,
        macs_shapes=macs_shapes,
        figures=figures,
        data=data,
        budget=budget,
        scorer=scorer,
    )


def _first_sample(data: DataSplits | None) -> Feed | None:
    """The dataset's first sample as the model takes it: its free dims are the real ones."""
    if data is None or data.dataset.samples == 0:
        return None
    return next(data.dataset.batches(1))[0]


def _shapes_that_run(
    session: onnxruntime.InferenceSession, info: ModelInfo, ev: Any, data: DataSplits | None
) -> tuple[TimedShapes, int, bool, dict[int, Feed]]:
    """The shapes to time at, their batch, whether it is free, and a feed per batch size
    (the headline one first). A free dim nothing sets gets the default guess, or the first
    larger guess the model runs at: the original must run once at the shapes before anything
    is measured."""
    guesses = (DEFAULT_DYNAMIC_DIM, *LARGER_GUESSES)
    for i, guess in enumerate(guesses):
        timed = timed_shapes(
            info.inputs, ev.batch_size, ev.input_shapes, _first_sample(data), ev.constants, guess
        )
        shapes = timed.shapes
        batch = batch_of(info, shapes)
        dynamic_batch = any(batch_dim_dynamic(t) for t in info.inputs if shapes[t.name])
        batch_sizes = list(dict.fromkeys([batch, *ev.batch_sizes])) if dynamic_batch else [batch]
        feeds = {
            b: _timing_feed(info, shapes_at(info, shapes, b), data, ev.seed, ev.constants)
            for b in batch_sizes
        }
        try:
            run_once(
                session,
                feeds[batch_sizes[0]],
                "ONNX Runtime cannot run the original model on inputs of shapes "
                f"{shapes} ({random_input_hint(info.inputs, ev.constants)})",
            )
        except EngineError:
            if not timed.defaulted or i == len(guesses) - 1:
                raise
            continue
        return timed, batch, dynamic_batch, feeds
    raise AssertionError("unreachable: the last guess raises or returns")


def _timing_feed(
    info: ModelInfo,
    shapes: dict[str, list[int]],
    data: DataSplits | None,
    seed: int,
    constants: Mapping[str, Any] | None = None,
) -> Feed:
    """The dataset's first samples when it has enough of them at exactly these shapes (a
    model with data-dependent work is then timed on what it will really see), else seeded
    random inputs of these shapes."""
    batch = batch_of(info, shapes)
    if data is not None and data.dataset.samples >= batch:
        feed = next(data.dataset.batches(batch))[0]
        if set(feed) == set(shapes) and all(list(a.shape) == shapes[n] for n, a in feed.items()):
            return dict(feed)
    return random_feed(info.inputs, shapes, np.random.default_rng([seed, 0, batch]), constants)


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
