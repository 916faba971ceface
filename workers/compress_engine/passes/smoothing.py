"""SmoothQuant-style activation smoothing for the int8 passes (Xiao et al., 2022).

A few channels of a transformer's activations are often tens of times larger than the rest,
and one int8 scale per tensor then leaves the others a handful of levels. Smoothing divides
each MatMul/Gemm input channel by a factor and multiplies the constant weight's row by it
(exact in float; passes/smoothing_graph does the rewrite), so the outliers move into the
weight, which is quantized per output channel and has room for them.

`smooth` is called once on a pass's prepared graph, before any build (a search's trials all
read the smoothed graph). In `auto` it builds the int8 model with and without smoothing and
keeps smoothing only if it measurably brings the int8 outputs closer to float32.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.configs import StaticInt8Config
from compress_engine.errors import EngineError
from compress_engine.onnx_files import has_external_data, model_bytes, rewrite, save_model
from compress_engine.passes.smoothing_graph import (
    activation_maxima,
    apply_smoothing,
    find_groups,
    outlier_ratio,
    read_float_inputs,
)
from compress_engine.report import ChoiceTrial, QuantChoice

if TYPE_CHECKING:
    from collections.abc import Sequence

    import onnxruntime

    from compress_engine.data import Dataset
    from compress_engine.passes.base import PassContext
    from compress_engine.passes.tunable import TunableQuantize

__all__ = ["read_float_inputs", "smooth"]

# auto smooths the activations whose largest channel max is at least this many times their
# median channel max (SmoothQuant's outliers are ~100x; per-tensor int8 suffers from ~10x).
# On all-MiniLM-L6-v2 (dynamic int8, alpha 0.7) that is 10 of 24 activations: mean cosine to
# fp32 0.9962-0.9967 at ~1% more CPU time per run, against 0.9977 at ~4% with all 24 smoothed
# (each smoothed activation is one more Div to run).
OUTLIER_RATIO = 8.0
# auto keeps smoothing only if the mean cosine to float32 gains more than this, and more than
# twice the standard error of the per-sample gains.
MIN_GAIN = 0.0005
# The default strength: per-channel weight scales take the moved range well, one scale per
# tensor does not. Measured on all-MiniLM-L6-v2, dynamic int8 with all 24 MatMul inputs
# smoothed, mean cosine to fp32 on 320 sentences: per-channel 0.9933 unsmoothed, 0.9222 at
# 0.3, 0.9940 at 0.5, 0.9977 at 0.65-0.7, 0.9974 at 0.8; per-tensor 0.9674 unsmoothed, 0.9782
# at 0.5, 0.9076 at 0.65.
ALPHA_PER_CHANNEL, ALPHA_PER_TENSOR = 0.7, 0.5
# Held-out calibration samples auto measures on: a quarter, at least 4, at most 64.
MIN_HELD_OUT, MAX_HELD_OUT = 4, 64
OPTION = "smooth_quant"


def smooth(
    technique: TunableQuantize, prepared: Path, ctx: PassContext
) -> tuple[Path, list[QuantChoice]]:
    """The graph a pass quantizes: `prepared`, smoothed when the config says so (or, in auto,
    when it measurably helps). Returns it and the choice to record."""
    import onnx

    cfg = technique.config
    mode = cfg.smooth_quant
    if mode == "off":
        return prepared, [_choice("off", "smooth_quant is off in the recipe.")]
    data = ctx.data
    if data is None or data.samples == 0:
        if mode == "on":
            raise EngineError(
                "smooth_quant: on measures activation ranges on calibration data: give a "
                "dataset, or set smooth_quant to auto or off."
            )
        return prepared, [_choice("off", "No calibration data to measure activations on.")]
    if has_external_data(prepared) and ctx.work_dir.resolve() not in prepared.resolve().parents:
        # A probe is written beside the model's data file: never into the user's folder.
        rewrite(prepared, ctx.work_dir / "smoothing-input.onnx")
        prepared = ctx.work_dir / "smoothing-input.onnx"
    model = onnx.load(str(prepared))
    groups = find_groups(model, _op_types(cfg), set(cfg.exclude))
    if not groups:
        return prepared, [_choice("off", "No MatMul/Gemm with a constant 2-D weight to smooth.")]
    held = _held_out(data.samples) if mode == "auto" else 0
    if mode == "auto" and not held:
        reason = f"Only {data.samples} calibration samples: too few to hold some out to measure."
        return prepared, [_choice("off", reason)]
    from compress_engine.passes.static_quantize import _fixed_batch

    fixed = _fixed_batch(model)
    batch = fixed or ctx.batch_size
    fit = data.take(slice(0, data.samples - held))
    rest = data.take(slice(data.samples - held, None))
    fit_feeds, held_feeds = _feeds(fit, batch, bool(fixed)), _feeds(rest, batch, bool(fixed))
    if not fit_feeds or (mode == "auto" and not held_feeds):
        return prepared, [_choice("off", f"Too few calibration samples for batches of {batch}.")]
    maxima = activation_maxima(prepared, [g.tensor for g in groups], fit_feeds, ctx.work_dir)
    ratios = {g.tensor: outlier_ratio(maxima[g.tensor]) for g in groups if g.tensor in maxima}
    worst = max(ratios.values(), default=1.0)
    if mode == "auto":
        # Only activations with outliers: each smoothed one costs a Div at run time.
        groups = [g for g in groups if ratios.get(g.tensor, 0.0) >= OUTLIER_RATIO]
        if not groups:
            reason = (
                f"No activation outliers: the largest channel is at most {worst:.1f}x the "
                f"median one (smoothing is tried from {OUTLIER_RATIO:g}x)."
            )
            return prepared, [_choice("off", reason)]
    alpha = cfg.smooth_quant_alpha or (ALPHA_PER_CHANNEL if cfg.per_channel else ALPHA_PER_TENSOR)
    count, folded = apply_smoothing(model, groups, maxima, alpha)
    out = ctx.work_dir / "smoothed.onnx"
    save_model(model, out)
    what = (
        f"{count} activation(s) feeding MatMul/Gemm smoothed (alpha {alpha:g}"
        f"{f', {folded} folded into LayerNormalization' if folded else ''}); largest outlier "
        f"{worst:.1f}x the median channel"
    )
    if mode == "on":
        return out, [_choice("on", f"smooth_quant is on in the recipe: {what}.")]
    return _decide(technique, prepared, out, replace(ctx, data=fit), held_feeds, what)


def _decide(
    technique: TunableQuantize,
    plain: Path,
    smoothed: Path,
    ctx: PassContext,
    feeds: list[dict],
    what: str,
) -> tuple[Path, list[QuantChoice]]:
    """Build both from ctx.data (the samples not held out), score both on the held-out
    `feeds`, keep smoothing only if it helps."""
    from compress_engine.device import physical_cores
    from compress_engine.measure.runtime import create_session

    threads = physical_cores()
    reference = create_session(plain, providers=["CPUExecutionProvider"], threads=threads)
    scores, trials = [], []
    for label, src in (("without smoothing", plain), ("with smoothing", smoothed)):
        work = ctx.work_dir / f"smoothing-{label.split()[0]}"
        work.mkdir(parents=True, exist_ok=True)
        trial_ctx = replace(
            ctx, work_dir=work, prepared=True, calibration_cache=None, evaluator=None
        )
        built = technique.quantize(src, work / "model.onnx", trial_ctx).model_path
        candidate = create_session(built, providers=["CPUExecutionProvider"], threads=threads)
        cos = sample_cosines(reference, candidate, feeds)
        scores.append(cos)
        trials.append(
            ChoiceTrial(label=label, fidelity=float(cos.mean()), size_bytes=model_bytes(built))
        )
    gains = scores[1] - scores[0]
    gain = float(gains.mean())
    noise = 2 * float(gains.std(ddof=1)) / math.sqrt(gains.size) if gains.size > 1 else 0.0
    keep = gain > MIN_GAIN and gain > noise
    measured = (
        f"mean cosine to float32 on {scores[0].size} held-out calibration samples "
        f"{trials[0].fidelity:.4f} without, {trials[1].fidelity:.4f} with ({gain:+.4f}, noise "
        f"±{noise:.4f})"
    )
    if keep:
        reason = f"Kept: {measured}; {what}."
    else:
        reason = f"Not kept: {measured}, not more than {MIN_GAIN:g} and the noise ({what}, tried)."
    return (smoothed if keep else plain), [_choice("on" if keep else "off", reason, trials)]


def sample_cosines(
    reference: onnxruntime.InferenceSession,
    candidate: onnxruntime.InferenceSession,
    feeds: Sequence[dict],
) -> np.ndarray:
    """Per sample, the cosine of the candidate's float outputs to the reference's (each
    output flattened per sample along its batch axis), averaged over outputs."""
    from compress_engine.measure.fidelity import output_batch_axes
    from compress_engine.measure.runtime import adapt_feed

    names = [o.name for o in reference.get_outputs()]
    axes = output_batch_axes(reference)
    per_feed = []
    for feed in feeds:
        ref = reference.run(names, feed)
        got = candidate.run(names, adapt_feed(candidate, feed))
        rows = []
        for r, g, axis in zip(ref, got, axes, strict=True):
            r, g = np.asarray(r), np.asarray(g)
            if not np.issubdtype(r.dtype, np.floating):
                continue
            if r.ndim > axis:
                r, g = np.moveaxis(r, axis, 0), np.moveaxis(g, axis, 0)
            r = r.reshape(len(r), -1) if r.ndim else r.reshape(1, 1)
            g = g.reshape(r.shape).astype(np.float64)
            rows.append(_row_cosines(r.astype(np.float64), g))
        lengths = {len(x) for x in rows}
        if len(lengths) == 1:
            per_feed.append(np.mean(rows, axis=0))
        elif rows:  # outputs disagree on the sample count: one score per output
            per_feed.append(np.array([float(x.mean()) for x in rows]))
    return np.concatenate(per_feed) if per_feed else np.zeros(0)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    dot = (a * b).sum(axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(norms > 0, dot / np.where(norms > 0, norms, 1.0), 0.0)
    cos = np.where(both_zero, 1.0, cos)
    return np.where(np.isfinite(cos), cos, 0.0)


def _op_types(cfg: object) -> set[str]:
    if isinstance(cfg, StaticInt8Config):
        return {"MatMul", "Gemm"} - set(cfg.exclude_op_types)
    return {"MatMul", "Gemm"} & set(getattr(cfg, "op_types", ()))


def _held_out(samples: int) -> int:
    held = min(samples // 4, MAX_HELD_OUT)
    return held if held >= MIN_HELD_OUT else 0


def _feeds(data: Dataset, batch: int, fixed: bool) -> list[dict]:
    # A model with a fixed batch takes exactly that many rows: no short last batch then.
    return [feed for feed, _ in data.batches(batch, drop_last=fixed)]


def _choice(chosen: str, reason: str, trials: list[ChoiceTrial] | None = None) -> QuantChoice:
    return QuantChoice(option=OPTION, chosen=chosen, reason=reason, trials=trials or [])
