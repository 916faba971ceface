"""Measurements shared by every variant, so all rows are measured the same way.

Latency is interleaved: the original and the variant run alternately in one loop, so drift
of a shared machine (frequency scaling, noisy neighbours) hits both alike and cancels in
the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import onnxruntime

    from benchmarks.detections import Detections


def session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    """A CPU session configured exactly as the engine configures its own."""
    from compress_engine.measure.runtime import create_session

    return create_session(path, providers=["CPUExecutionProvider"], threads=threads)


def litert_session(
    path: Path, original: onnxruntime.InferenceSession, threads: int
) -> onnxruntime.InferenceSession:
    """A .tflite file in the LiteRT interpreter, fed and read in the original's ONNX layout
    (the engine's report beside it says which inputs the file takes channel-last)."""
    import json

    from compress_engine.export.litert import LiteRTSession, output_shapes

    report = json.loads((path.parent / "report.json").read_text(encoding="utf-8"))
    (info,) = [a for a in report["artifacts"] if a["name"] == path.name]
    return LiteRTSession(  # type: ignore[return-value]
        path,
        input_names=[i.name for i in original.get_inputs()],
        onnx_outputs=output_shapes(original.get_outputs()),
        layouts=info.get("layouts", {}),
        threads=threads,
    )


def interleaved_latency(
    original: onnxruntime.InferenceSession,
    variant: onnxruntime.InferenceSession,
    feed: Mapping[str, np.ndarray],
    *,
    warmup: int,
    runs: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-run milliseconds of (original, variant), timed alternately on the same feed.

    The order flips every round so neither model always runs on a cache the other warmed.
    """
    feed = dict(feed)
    for _ in range(warmup):
        original.run(None, feed)
        variant.run(None, feed)
    times = np.empty((2, runs), dtype=np.float64)
    pair = (original, variant)
    for i in range(runs):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for k in order:
            start = time.perf_counter()
            pair[k].run(None, feed)
            times[k, i] = time.perf_counter() - start
    return times[0] * 1e3, times[1] * 1e3


def p50(ms: np.ndarray) -> float:
    return float(np.median(ms))


def outputs(
    sess: onnxruntime.InferenceSession, inputs: Mapping[str, np.ndarray], batch: int
) -> np.ndarray:
    """The first output over all samples (samples on axis 0, the output's own shape kept),
    run `batch` samples at a time."""
    n = len(next(iter(inputs.values())))
    chunks = []
    for start in range(0, n, batch):
        feed = {k: v[start : start + batch] for k, v in inputs.items()}
        chunks.append(sess.run(None, feed)[0])
    return np.concatenate(chunks).astype(np.float64)


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [N, D] arrays (1.0 for two all-zero rows)."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = (a * b).sum(axis=1)
    denom = na * nb
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0)
    return np.where(both_zero, 1.0, cos)


def nearest_neighbours(emb: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row by cosine similarity."""
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def top5_agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of samples whose fp32 top-1 class is among the candidate's five best (top-5
    accuracy with fp32's prediction as the label)."""
    top5 = np.argpartition(-candidate, 4, axis=1)[:, :5]
    return float((top5 == reference.argmax(axis=1)[:, None]).any(axis=1).mean())


def fidelity(
    reference: np.ndarray,
    candidate: np.ndarray,
    kind: str,
    labels: np.ndarray | None,
    postprocess: Callable[[np.ndarray], list[Detections]] | None = None,
) -> dict[str, Any]:
    """Accuracy and agreement figures of `candidate` outputs against the `reference` ones.

    Cosine and max error compare the raw outputs, flattened per sample (for a detector: the
    boxes and scores of every anchor); a detector is also compared on its decoded detections.
    """
    n, raw_shape = len(reference), reference.shape[1:]
    reference, candidate = reference.reshape(n, -1), candidate.reshape(n, -1)
    finite = bool(np.isfinite(candidate).all())
    cos = cosine_per_sample(reference, candidate) if finite else None
    out: dict[str, Any] = {
        "max_abs_error": float(np.abs(reference - candidate).max()) if finite else None,
        "accuracy": None,
        "fidelity_cosine": None if cos is None else float(cos.mean()),
        "fidelity_cosine_min": None if cos is None else float(cos.min()),
        "top1_agreement": None,
        "top5_agreement": None,
        "nn_agreement": None,
        "detection_agreement": None,
    }
    if kind == "classifier":
        top1 = candidate.argmax(axis=1)
        out["top1_agreement"] = float((top1 == reference.argmax(axis=1)).mean())
        if candidate.shape[1] >= 5:
            out["top5_agreement"] = top5_agreement(reference, candidate)
        if labels is not None:
            out["accuracy"] = round(100.0 * float((top1 == labels).mean()), 3)
    elif kind == "embedding" and finite:
        same = nearest_neighbours(candidate) == nearest_neighbours(reference)
        out["nn_agreement"] = float(same.mean())
    elif kind == "detector" and finite:
        from benchmarks.detections import detection_agreement

        if postprocess is None:
            raise ValueError("a detector needs its postprocess to be compared")
        shape = (n, *raw_shape)
        out["detection_agreement"] = detection_agreement(
            postprocess(reference.reshape(shape)), postprocess(candidate.reshape(shape))
        )
    return out


def static_counts(path: Path, eval_inputs: Mapping[str, np.ndarray]) -> dict[str, int | None]:
    """MACs of one sample (from the ONNX graph with shapes) and parameter count."""
    import onnx

    from compress_engine.measure.macs import count_macs
    from compress_engine.measure.params import count_parameters

    model = onnx.load(str(path))
    shapes = {name: [1, *arr.shape[1:]] for name, arr in eval_inputs.items()}
    return {"macs": count_macs(model, shapes).total, "params": count_parameters(model)}
