"""ONNX Runtime sessions and seeded inputs for the stages, with errors a user can act on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.errors import EngineError, short_message
from compress_engine.inspect import ModelInfo
from compress_engine.measure.inputs import batch_dim_dynamic, random_feed
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
    """Samples per run: the leading dim of the first input that has one."""
    for t in info.inputs:
        if shapes[t.name]:
            return shapes[t.name][0]
    return 1


def shapes_at(info: ModelInfo, shapes: Mapping[str, list[int]], batch: int) -> dict[str, list[int]]:
    """`shapes` with every dynamic leading (batch) dim set to `batch`."""
    out = {}
    for t in info.inputs:
        s = list(shapes[t.name])
        if s and batch_dim_dynamic(t):
            s[0] = batch
        out[t.name] = s
    return out


def random_feeds(
    info: ModelInfo, batches: list[dict[str, list[int]]], seed: int
) -> Iterator[dict[str, np.ndarray]]:
    # One generator per batch, seeded by (seed, index): reproducible and independent of how
    # many batches were consumed before.
    for i, shapes in enumerate(batches, start=1):
        yield random_feed(info.inputs, shapes, np.random.default_rng([seed, i]))
