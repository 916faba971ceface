"""Latency percentiles of an ONNX Runtime session."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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
    ms = times * 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return Latency(
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=float(ms.mean()),
        runs=runs,
        warmup=warmup,
        batch_size=batch_size,
        throughput_per_s=batch_size / (p50 / 1e3) if p50 > 0 else 0.0,
        provider=session.get_providers()[0],
        threads=threads,
    )
