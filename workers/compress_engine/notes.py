"""The report's notes: what a user should know about a result, in plain numbers, and what
to try next (leaving out what the run already did)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from compress_engine.report import (
    Accuracy,
    AutoSummary,
    Fidelity,
    ModelMeasurement,
    NoiseBand,
    OutputFidelity,
    PruningDetails,
    QuantizationDetails,
)
from compress_engine.report_figures import speed_text
from compress_engine.tuning import Budget

if TYPE_CHECKING:
    from compress_engine.data import Dataset


class Splits(Protocol):
    """What the notes read of a run's dataset splits (compress_engine.pipeline.splits)."""

    @property
    def dataset(self) -> Dataset: ...
    @property
    def calibration(self) -> Dataset: ...
    @property
    def training(self) -> Dataset: ...
    @property
    def separate_training(self) -> bool: ...


# Below these the report warns that the outputs moved noticeably.
_MIN_COSINE = 0.99
_MIN_TOP1 = 0.95
_SLOWER = 1.05
# Outputs whose task agreement, not their cosine, says whether they moved.
_JUDGED_BY_AGREEMENT = ("sequence", "dense-map", "embedding")
# The band speed_notes judges by where no noise band was measured.
_FIXED_BAND = NoiseBand(low=1.0, high=1.0, noise=_SLOWER - 1, blocks=0, rounds=0)
# Top-1 accuracy points lost above which the report warns.
_MAX_DROP_POINTS = 1.0


def _pruning_tips(pruning: PruningDetails | None, trained: bool) -> list[str]:
    if pruning is None:
        return []
    if not trained:
        return ["a distill step after prune (pruning alone leaves the model untrained)"]
    return [
        "more distill epochs",
        f"a smaller prune amount than {pruning.amount:.2f}",
    ]


def accuracy_advice(
    quant: QuantizationDetails | None, pruning: PruningDetails | None, trained: bool
) -> str:
    tips = _pruning_tips(pruning, trained)
    if quant is not None and quant.mode in ("dynamic-int8", "static-int8"):
        if not quant.per_channel:
            tips.append("per-channel weights")
        tips.append("accuracy_aware: true with max_accuracy_drop in evaluate")
    if quant is not None or pruning is None:
        tips.append("keeping the first and last layers in float")
    return ", or ".join(tips)


def fidelity_advice(
    quant: QuantizationDetails | None,
    pruning: PruningDetails | None = None,
    trained: bool = False,
) -> str:
    """What to try next, leaving out what the run already did."""
    int8 = quant is not None and quant.mode in ("dynamic-int8", "static-int8")
    tips = _pruning_tips(pruning, trained)
    if int8 and not quant.per_channel:
        tips.append("per_channel: true")
    if quant is not None and quant.mode == "weight-int4":
        tips.append("a smaller block_size")
    if int8:
        tips.append(
            "accuracy_aware: true with a budget in evaluate (keeps the most sensitive layers "
            "in float)"
        )
    if quant is not None or pruning is None:
        tips.append("exclude the most sensitive layers by name (often the first and last)")
    return ", or ".join(tips)


def top1_if_class_scores(
    summary: OutputFidelity, accuracy: Accuracy | None, data: Splits | None
) -> float | None:
    """Top-1 agreement, where it means something: class scores (labels given, or a model
    run without a dataset). A dataset without labels usually feeds an embedding model, where
    the argmax of a vector is arbitrary."""
    return summary.top1_agreement if (accuracy is not None or data is None) else None


def honest_notes(
    original: ModelMeasurement,
    result: ModelMeasurement,
    fidelity: Fidelity,
    accuracy: Accuracy | None,
    data: Splits | None,
    budget: Budget | None = None,
    auto: AutoSummary | None = None,
    quant: QuantizationDetails | None = None,
    pruning: PruningDetails | None = None,
    trained: bool = False,
    noise: Mapping[str, NoiseBand] | None = None,
) -> list[str]:
    notes = []
    if fidelity.inputs == "random":
        why = "no dataset" if data is None else "the evaluation split is empty"
        notes.append(
            f"Fidelity was measured on {fidelity.samples} random inputs ({why}): it shows how "
            "far the outputs moved, not accuracy on real data."
        )
    elif data is not None:
        measured = "Fidelity and accuracy were" if accuracy else "Fidelity was"
        if data.separate_training:
            held_out = (
                f"{data.calibration.samples} calibration and {data.training.samples} "
                "training samples"
            )
        else:
            held_out = f"{data.calibration.samples} calibration{' and training' * trained} samples"
        notes.append(
            f"{measured} measured on the "
            f"{fidelity.samples}-sample evaluation split of the dataset, disjoint from the "
            f"{held_out}."
        )
        if accuracy is None and data.dataset.labels is None:
            notes.append("The dataset has no labels (`y`), so accuracy was not measured.")
    if accuracy is not None and accuracy.drop_points > _MAX_DROP_POINTS:
        notes.append(
            f"Top-1 accuracy dropped by {accuracy.drop_points:.2f} points "
            f"({accuracy.original_top1:.2%} -> {accuracy.result_top1:.2%}). Try "
            f"{accuracy_advice(quant, pruning, trained)}."
        )
    kept_original = auto is not None and auto.pick is None
    notes += speed_notes(original, result, noise or {}, auto, quant)
    if budget is not None:
        if budget.metric == "accuracy_drop" and accuracy is not None:
            value: float | None = accuracy.drop_points
        else:
            value = fidelity.summary.cosine_similarity
            budget = Budget("cosine", budget.limit) if budget.metric == "cosine" else None
        if budget is not None and value is not None and not budget.meets(value):
            notes.append(f"The result misses the budget: {budget.show(value)}.")
    if result.size_bytes >= original.size_bytes and not kept_original:
        notes.append(
            f"The compressed model is not smaller than the original ({result.size_bytes:,} vs "
            f"{original.size_bytes:,} bytes)."
        )
    s = fidelity.summary
    top1 = top1_if_class_scores(s, accuracy, data)
    if s.cosine_similarity is None:
        notes.append(f"Output {s.name!r} contains NaN or Inf, so its differences are not shown.")
    elif s.kind in _JUDGED_BY_AGREEMENT:
        # A cosine means little here (a mostly-zero map, argmax steps): the agreement decides.
        if s.agreement is not None and s.agreement < _MIN_TOP1:
            notes.append(
                f"Outputs moved noticeably ({s.metric_label} {s.agreement:.1%}, cosine "
                f"{s.cosine_similarity:.4f}). Try {fidelity_advice(quant, pruning, trained)}."
            )
    elif s.cosine_similarity < _MIN_COSINE or (top1 is not None and top1 < _MIN_TOP1):
        shown = "" if top1 is None else f", top-1 agreement {top1:.1%}"
        notes.append(
            f"Outputs moved noticeably (cosine {s.cosine_similarity:.4f}{shown}). Try "
            f"{fidelity_advice(quant, pruning, trained)}."
        )
    return notes


def speed_notes(
    original: ModelMeasurement,
    result: ModelMeasurement,
    noise: Mapping[str, NoiseBand],
    auto: AutoSummary | None = None,
    quant: QuantizationDetails | None = None,
) -> list[str]:
    """What the timing means, judged per batch size against its noise band (how far an
    identical copy of the original timed from it in the same rounds): slower beyond it is
    flagged, inside it is "no measurable speed change", never a speed-up. A batch size
    without a band (older callers) gets the fixed _SLOWER slack."""
    if auto is not None and auto.pick is None:
        return [
            "The result is the original model, unchanged: any difference between the two "
            "latency figures is measurement noise on this machine (no measurable speed change)."
        ]
    verdicts = []
    figures: dict[str, str] = {}
    for b, o in original.latency_by_batch.items():
        r = result.latency_by_batch.get(b)
        if r is None or r.p50_ms <= 0:
            continue
        band = noise.get(b) or _FIXED_BAND
        speedup = o.p50_ms / r.p50_ms
        verdicts.append((b, o, r, speed_text(speedup, band), band.verdict(speedup)))
        figures[b] = f"{speedup:.2f}×, noise ±{band.noise:.0%}"
    notes = []
    slower = [(b, o, r, text) for b, o, r, text, verdict in verdicts if verdict == "slower"]
    if slower:
        detail = "; ".join(
            f"batch {b}: p50 {r.p50_ms:.4g} ms vs {o.p50_ms:.4g} ms, {text}"
            for b, o, r, text in slower
        )
        why = (
            "For small models the cost of quantizing activations (or converting types) at run "
            "time can outweigh the faster kernels."
            if quant is not None
            else "On a model this fast, fixed per-run overheads dominate the timing, so less "
            "arithmetic need not show; compare at a larger batch size."
        )
        notes.append(
            f"The compressed model is slower than the original on this device beyond the "
            f"timing noise ({detail}; timed interleaved on the same inputs). {why}"
        )
    same = [f"batch {b}: {figures[b]}" for b, *_, verdict in verdicts if verdict == "unchanged"]
    if same:
        notes.append(
            f"No measurable speed change ({'; '.join(same)}): the difference is inside the "
            "noise band, how far an identical copy of the original timed from it in the same "
            "interleaved rounds."
        )
    if auto is not None and verdicts and verdicts[0][4] != "faster":
        notes.append(
            f"auto picked {auto.pick} on its own timing, but the final timing shows "
            f"{verdicts[0][3]} at batch {verdicts[0][0]}: the gain did not hold up on this "
            "machine, so the original may serve as well."
        )
    return notes
