"""Stage 3: the result must load and run in ONNX Runtime at every batch size the original
ran at, with the original's outputs, before anything is measured."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from compress_engine.errors import EngineError
from compress_engine.measure.runtime import adapt_feed
from compress_engine.pipeline.original import Feed, Original
from compress_engine.pipeline.sessions import open_session, run_once
from compress_engine.pipeline.state import Run
from compress_engine.pipeline.steps import Steps

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class Validated:
    session: onnxruntime.InferenceSession  # the result's
    feeds: dict[int, Feed]  # the original's feeds, adapted to the result's input types


def validate(run: Run, original: Original, steps: Steps) -> Validated:
    run.tracker.stage("Validating result", run.layout.validate, run.layout.measure_result)
    with run.timed("Validate result"):
        session = open_session(
            steps.current,
            run.providers,
            run.threads,
            f"{steps.last_title} produced a model ONNX Runtime cannot load",
        )
        feeds = {b: adapt_feed(session, f) for b, f in original.feeds.items()}
        for b in original.batch_sizes:
            run_once(
                session, feeds[b], f"{steps.last_title} produced a model ONNX Runtime cannot run"
            )
        want = [o.name for o in original.session.get_outputs()]
        got = [o.name for o in session.get_outputs()]
        if want != got:
            raise EngineError(
                f"{steps.last_title} changed the model outputs from {want} to {got}; cannot "
                "compare."
            )
    return Validated(session=session, feeds=feeds)
