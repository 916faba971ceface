"""ONNX Runtime sessions and seeded inputs for the stages, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compress_engine.errors import EngineError, short_message
from compress_engine.inspect import ModelInfo
from compress_engine.measure import inputs as feeds
from compress_engine.measure.runtime import create_session

if TYPE_CHECKING:
    import onnxruntime


def open_session(
    path: Path, providers: list[str], threads: int, failure: str
) -> onnxruntime.InferenceSession:
    try:
        return create_session(path, providers=providers, threads=threads)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        # Scratch paths mean nothing to the user; the file name is enough.
        message = short_message(exc).replace(str(path), path.name)
        raise EngineError(f"{failure}: {message}") from exc


def run_once(
    session: onnxruntime.InferenceSession, feed: Mapping[str, np.ndarray], failure: str
) -> None:
    try:
        session.run(None, dict(feed))
    except Exception as exc:
        raise EngineError(f"{failure}: {short_message(exc)}") from exc


def batch_of(info: ModelInfo, shapes: Mapping[str, list[int]]) -> int:
    """Samples per run: the batch-axis dim of the first input that has one."""
    return feeds.batch_of(info.inputs, shapes)


def shapes_at(info: ModelInfo, shapes: Mapping[str, list[int]], batch: int) -> dict[str, list[int]]:
    """`shapes` with every free batch dim (on each input's batch axis) set to `batch`."""
    return feeds.shapes_at(info.inputs, shapes, batch)


def random_feeds(
    info: ModelInfo,
    batches: list[dict[str, list[int]]],
    seed: int,
    constants: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Seeded random feeds at `batches`' shapes; inputs in `constants` get their value."""
    # One generator per batch, seeded by (seed, index): reproducible and independent of how
    # many batches were consumed before.
    for i, shapes in enumerate(batches, start=1):
        yield feeds.random_feed(info.inputs, shapes, np.random.default_rng([seed, i]), constants)
