"""Latency percentiles of ONNX Runtime sessions, timed alone or interleaved, and the noise
band of a comparison: how far an identical copy of the original times from it."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.report import Latency, NoiseBand

if TYPE_CHECKING:
    import onnxruntime

# Report progress every this many runs so a long measurement visibly moves.
PROGRESS_EVERY = 10
# The noise band compares the identical pair over up to this many blocks of rounds, each of
# at least MIN_BLOCK_ROUNDS (fewer rounds: one ratio over all of them).
MAX_BLOCKS = 5
MIN_BLOCK_ROUNDS = 4


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

    Each round runs every session once, in an order that rotates by one from round to round
    (A B C, B C A, C A B, ...; for two models A B, B A), so every model takes every position
    equally often: slow drift of the machine (frequency scaling, a neighbour's load) and any
    advantage of going first, last or after a given model fall on all models alike.
    """
    times = _interleaved_ms(runs_of, warmup=warmup, runs=runs, progress=progress)
    return [
        _latency(times[i], s, warmup, batch_size, threads, interleaved=len(runs_of) > 1)
        for i, (s, _) in enumerate(runs_of)
    ]


def measure_against_copy(
    original: tuple[onnxruntime.InferenceSession, Mapping[str, np.ndarray]],
    copy: onnxruntime.InferenceSession,
    others: Sequence[tuple[onnxruntime.InferenceSession, Mapping[str, np.ndarray]]],
    *,
    warmup: int,
    runs: int,
    batch_size: int,
    threads: int,
    progress: Callable[[float], None] | None = None,
) -> tuple[Latency, list[Latency], NoiseBand]:
    """The original's and every other model's latency, and the noise band of their ratios.

    `copy` is a second session of the original's file: it runs on the original's feed as one
    more model in the same rotation (no extra timing phase), and how far it times from the
    original is what an identical model measures as by this method (NoiseBand).
    """
    runs_of = [original, *others, (copy, original[1])]
    times = _interleaved_ms(runs_of, warmup=warmup, runs=runs, progress=progress)
    latencies = [
        _latency(times[i], s, warmup, batch_size, threads, interleaved=True)
        for i, (s, _) in enumerate(runs_of[:-1])
    ]
    return latencies[0], latencies[1:], noise_band(times[0], times[-1])


def noise_band(original_ms: np.ndarray, copy_ms: np.ndarray) -> NoiseBand:
    """The identical pair's ratio of medians per block of rounds and over all of them
    (NoiseBand says why blocks); paired runs share a round, so the blocks line up."""
    rounds = int(original_ms.size)
    blocks = max(1, min(MAX_BLOCKS, rounds // MIN_BLOCK_ROUNDS))
    ratios = [_median_ratio(original_ms, copy_ms)]
    if blocks > 1:
        pairs = zip(
            np.array_split(original_ms, blocks), np.array_split(copy_ms, blocks), strict=True
        )
        ratios += [_median_ratio(o, c) for o, c in pairs]
    return NoiseBand.from_ratios(ratios, blocks=blocks, rounds=rounds)


def _median_ratio(original_ms: np.ndarray, copy_ms: np.ndarray) -> float:
    copy = float(np.median(copy_ms))
    return float(np.median(original_ms)) / copy if copy > 0 else float("inf")


def _interleaved_ms(
    runs_of: Sequence[tuple[onnxruntime.InferenceSession, Mapping[str, np.ndarray]]],
    *,
    warmup: int,
    runs: int,
    progress: Callable[[float], None] | None,
) -> np.ndarray:
    """Milliseconds per (session, round), the order rotating every round."""
    feeds = [dict(feed) for _, feed in runs_of]
    sessions = [s for s, _ in runs_of]
    n = len(sessions)
    total = (warmup + runs) * n
    done = 0
    for _ in range(warmup):
        for i in range(n):
            sessions[i].run(None, feeds[i])
            done += 1
        if progress is not None:
            progress(done / total)
    times = np.empty((n, runs), dtype=np.float64)
    for r in range(runs):
        for k in range(n):
            i = (r + k) % n
            start = time.perf_counter()
            sessions[i].run(None, feeds[i])
            times[i, r] = time.perf_counter() - start
            done += 1
        if progress is not None and (r % PROGRESS_EVERY == 0 or r == runs - 1):
            progress(done / total)
    return times * 1e3


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
