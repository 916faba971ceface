"""Latency percentiles of an ONNX Runtime session."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.report import Latency

if TYPE_CHECKING:
    import onnxruntime

# Report progress every this many runs so a long measurement visibly moves.
PROGRESS_EVERY = 10


def measure_latency(
    session: onnxruntime.InferenceSession,
    feed: Mapping[str, np.ndarray],
    *,
    warmup: int,
    runs: int,
    batch_size: int,
    threads: int,
    progress: Callable[[float], None] | None = None,
) -> Latency:
    """Time `runs` calls of session.run after `warmup` untimed ones.

    progress(fraction) is called every PROGRESS_EVERY runs; whatever it raises propagates.
    """
    total = warmup + runs
    done = 0

    def tick() -> None:
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == total):
            progress(done / total)

    feed = dict(feed)
    for _ in range(warmup):
        session.run(None, feed)
        done += 1
        tick()
    times = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times[i] = time.perf_counter() - start
        done += 1
        tick()
    return _latency(times * 1e3, session, warmup, batch_size, threads, interleaved=False)


def measure_interleaved(
    runs_of: Sequence[tuple[onnxruntime.InferenceSession, Mapping[str, np.ndarray]]],
    *,
    warmup: int,
    runs: int,
    batch_size: int,
    threads: int,
    progress: Callable[[float], None] | None = None,
) -> list[Latency]:
    """Time several sessions in alternation, one Latency per (session, feed), in order.

    Each round runs every session once, in an order that reverses from round to round
    (A B C, C B A, ...), so slow drift of the machine (frequency scaling, a neighbour's load)
    and any advantage of going first or last fall on all models alike.
    """
    feeds = [dict(feed) for _, feed in runs_of]
    sessions = [s for s, _ in runs_of]
    order = list(range(len(sessions)))
    total = (warmup + runs) * len(sessions)
    done = 0
    for _ in range(warmup):
        for i in order:
            sessions[i].run(None, feeds[i])
            done += 1
        if progress is not None:
            progress(done / total)
    times = np.empty((len(sessions), runs), dtype=np.float64)
    for r in range(runs):
        for i in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            sessions[i].run(None, feeds[i])
            times[i, r] = time.perf_counter() - start
            done += 1
        if progress is not None and (r % PROGRESS_EVERY == 0 or r == runs - 1):
            progress(done / total)
    return [
        _latency(times[i] * 1e3, s, warmup, batch_size, threads, interleaved=len(sessions) > 1)
        for i, s in enumerate(sessions)
    ]


def _latency(
    ms: np.ndarray,
    session: onnxruntime.InferenceSession,
    warmup: int,
    batch_size: int,
    threads: int,
    *,
    interleaved: bool,
) -> Latency:
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Latency(
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(ms.mean()),
        runs=int(ms.size),
        warmup=warmup,
        batch_size=batch_size,
        throughput_per_s=batch_size / (p50 / 1e3) if p50 > 0 else 0.0,
        provider=session.get_providers()[0],
        threads=threads,
        interleaved=interleaved,
    )
