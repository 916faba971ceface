"""Quantization that holds a budget: the budget, the scorer, and the accuracy-aware search
around a fully quantized model (the `auto` mode's pass, passes/auto.py, uses the budget and
scorer).

The algorithms (fallback units, ranking, fallback search) live in `search/` and know nothing
of ONNX Runtime; this module binds them to real passes, sessions and data, with
`tuning_rank` (per-layer sensitivity on calibration data) and `tuning_report` (each trial's
size and latency, and the notes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from compress_engine.configs import EvaluateConfig, StaticInt8Config
from compress_engine.errors import EngineError
from compress_engine.measure.accuracy import AccuracyCounter
from compress_engine.measure.runtime import adapt_feed, create_session
from compress_engine.onnx_files import model_bytes
from compress_engine.passes.base import PassResult
from compress_engine.passes.tunable import TRIAL_CALIBRATION_SAMPLES
from compress_engine.report import LayerSensitivityInfo, SearchSummary
from compress_engine.search import (
    SearchOutcome,
    fallback_search,
)
from compress_engine.tuning_rank import Ranking, rank, ranking_samples
from compress_engine.tuning_report import search_notes, summary_trials

if TYPE_CHECKING:
    import onnxruntime

    from compress_engine.passes.base import Evaluator
    from compress_engine.passes.tunable import Builder

Feed = dict[str, np.ndarray]
Batch = tuple[Feed, "np.ndarray | None"]

# A trial improves on another when it removes at least this share of the remaining error
# (1 - cosine); less is rounding noise, not a move worth keeping a layer in float for.
MIN_GAIN = 0.05
# The search stops after this many trials in a row that did not improve.
PATIENCE = 2


# --- budget ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    metric: Literal["accuracy_drop", "cosine"]
    limit: float

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "cosine"

    def meets(self, value: float) -> bool:
        # A hair of slack: float sums of the same outputs may differ in the last bits.
        if self.metric == "cosine":
            return value >= self.limit - 1e-12
        return value <= self.limit + 1e-9

    def improves(self, new: float, old: float) -> bool:
        """Whether `new` is a real step from `old`: cosine closes at least MIN_GAIN of the gap
        to 1; a top-1 drop falls (one more sample right is a step: accuracy is a count)."""
        if self.metric == "cosine":
            return new > old and (1.0 - new) <= (1.0 - old) * (1.0 - MIN_GAIN)
        return new < old - 1e-9

    def show(self, value: float) -> str:
        if self.metric == "cosine":
            # As many decimals as the budget has (at least 5), so a miss never reads as a tie.
            places = min(9, max(5, len(f"{self.limit:.10g}".partition(".")[2])))
            return f"cosine {value:.{places}f} (budget >= {self.limit:.10g})"
        return f"top-1 drop {value:.2f} points (budget <= {self.limit:g})"


def resolve_budget(ev: EvaluateConfig, *, labels: bool) -> Budget | None:
    """The budget the run is held to: accuracy with labels, else fidelity; None if unset."""
    if ev.max_accuracy_drop is not None and labels:
        return Budget("accuracy_drop", ev.max_accuracy_drop)
    if ev.min_fidelity is not None:
        return Budget("cosine", ev.min_fidelity)
    if ev.max_accuracy_drop is not None:
        raise EngineError(
            "evaluate.max_accuracy_drop needs a dataset with labels (an integer array `y`) to "
            "measure accuracy; give one, or set evaluate.min_fidelity (cosine similarity to the "
            "original's outputs, e.g. 0.999) instead."
        )
    return None


class Scorer:
    """Scores candidate models against the original on fixed batches, for one budget metric.

    The metric is computed exactly as the report computes it (top-1 drop through
    AccuracyCounter, cosine of the flattened first output), on the same batches, so the
    chosen trial's figure equals the report's.
    """

    def __init__(
        self,
        original: onnxruntime.InferenceSession,
        batches: Sequence[Batch],
        *,
        providers: Sequence[str],
        threads: int,
    ) -> None:
        self.output = original.get_outputs()[0].name
        self.batches = list(batches)
        self.providers = list(providers)
        self.threads = threads
        self._original: onnxruntime.InferenceSession | None = original
        self._reference: list[np.ndarray] | None = None
        self._cache: dict[tuple[Path, str], float] = {}

    @property
    def reference(self) -> list[np.ndarray]:
        """The original's first output per batch, computed on first use."""
        if self._reference is None:
            assert self._original is not None
            self._reference = [
                np.asarray(self._original.run([self.output], dict(feed))[0])
                for feed, _ in self.batches
            ]
        return self._reference

    @property
    def samples(self) -> int:
        return sum(int(next(iter(f.values())).shape[0]) for f, _ in self.batches)

    def subset(self, samples: int) -> Scorer:
        """A scorer on the first batches holding at most `samples` samples (at least one)."""
        out = object.__new__(Scorer)
        out.output, out.providers, out.threads = self.output, self.providers, self.threads
        out._cache, out._original = {}, None
        out.batches, out._reference = [], []
        taken = 0
        for batch, ref in zip(self.batches, self.reference, strict=True):
            rows = int(ref.shape[0]) if ref.ndim else 1
            if out.batches and taken + rows > samples:
                break
            out.batches.append(batch)
            out._reference.append(ref)
            taken += rows
        return out

    def outputs(self, path: Path) -> list[np.ndarray]:
        session = create_session(path, providers=self.providers, threads=self.threads)
        return [
            np.asarray(session.run([self.output], adapt_feed(session, feed))[0])
            for feed, _ in self.batches
        ]

    def metric(self, path: Path, budget: Budget) -> float:
        key = (path, budget.metric)
        if key not in self._cache:
            got = self.outputs(path)
            cosine = budget.metric == "cosine"
            self._cache[key] = _cosine(self.reference, got) if cosine else self._drop(got)
        return self._cache[key]

    def _drop(self, got: list[np.ndarray]) -> float:
        counter = AccuracyCounter(output=self.output)
        for (_, labels), ref, out in zip(self.batches, self.reference, got, strict=True):
            if labels is None:
                raise EngineError("evaluate.max_accuracy_drop needs labels for every sample.")
            counter.add(ref, out, labels)
        summary = counter.summary()
        if summary is None:
            raise EngineError(
                (counter.skipped or "Accuracy could not be measured.")
                + " Use evaluate.min_fidelity as the budget instead of max_accuracy_drop."
            )
        return summary.drop_points


def _cosine(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    dot = na = nb = 0.0
    for r, c in zip(reference, candidate, strict=True):
        a = np.asarray(r, dtype=np.float64).ravel()
        b = np.asarray(c, dtype=np.float64).ravel()
        dot += float(a @ b)
        na += float(a @ a)
        nb += float(b @ b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0 or not np.isfinite(dot):
        return 0.0
    return max(-1.0, min(1.0, dot / float(np.sqrt(na * nb))))


# --- sensitivity and accuracy-aware search ---------------------------------------------


@dataclass
class Tuned:
    result: PassResult
    sensitivity: list[LayerSensitivityInfo] | None = None
    search: SearchSummary | None = None
    notes: list[str] = field(default_factory=list)


def tune(
    first: PassResult,
    builder: Builder,
    ev: Evaluator,
    *,
    progress: Callable[[str, float, float], Callable[[float], None]],
) -> Tuned:
    """Sensitivity ranking and/or the accuracy-aware search around the fully quantized
    model `first` (built by `builder` from its shared graph).

    progress(label, lo, hi) starts a sub-stage and returns its fraction callback.
    """
    cfg = builder.config
    budget = ev.budget
    out = Tuned(result=first)
    floor = _FloorCheck(ev)
    missed = False
    if cfg.accuracy_aware and budget is not None:
        metric = ev.scorer.metric(first.model_path, budget)
        missed = not budget.meets(metric) or bool(floor(first.model_path))
    ranking = None
    if cfg.sensitivity or missed:
        ranking = rank(builder, ev, progress("Ranking layer sensitivity", 0.0, 0.5))
        out.sensitivity = ranking.info
        if ranking.found > len(ranking.info):
            out.notes.append(
                f"Sensitivity was ranked for {len(ranking.info)} of {ranking.found} quantizable "
                "layers: the first and last layers, then those with the most weights."
            )
        out.notes.append(
            f"Layer sensitivity: each of {len(ranking.info)} layers was quantized alone (with "
            "the bias, activation, pooling and reshape nodes that carry its output) and scored "
            f"on {ranking_samples(builder)} calibration samples (relative error of the first "
            f"output{builder.calibration_note}); the search tries them by error removed per "
            "byte kept in float."
        )
    if not cfg.accuracy_aware or budget is None:
        return out
    outcome = _search(first, builder, ev, ranking if missed else None, floor, progress)
    builder.built[first.model_path] = first
    out.result = builder.built[outcome.best.model_path]
    original_size = model_bytes(builder.model_in)
    out.search = SearchSummary(
        metric=budget.metric,
        budget=budget.limit,
        met=outcome.met_budget,
        trials=summary_trials(outcome.trials, ev, progress("Timing the trials", 0.9, 1.0)),
        chosen=outcome.best.index,
        samples=ev.scorer.samples,
        stop_reason=outcome.stop_reason,
        skipped=outcome.skipped,
        original_size_bytes=original_size,
    )
    out.notes += search_notes(out.search, budget, missed=missed)
    capped = isinstance(cfg, StaticInt8Config) and cfg.samples > TRIAL_CALIBRATION_SAMPLES
    if capped and outcome.best.index > 0 and not builder.reuses_calibration:
        out.notes.append(
            f"The kept trial was calibrated on at most {TRIAL_CALIBRATION_SAMPLES} samples "
            f"(not {cfg.samples}) to bound the search time."
        )
    return out


def _search(
    first: PassResult,
    builder: Builder,
    ev: Evaluator,
    ranking: Ranking | None,
    floor: _FloorCheck,
    progress: Callable[[str, float, float], Callable[[float], None]],
) -> SearchOutcome:
    """fallback_search over the ranking's order (nothing to try without one: the fully
    quantized model met the budget), every trial built from the shared graph."""
    budget = ev.budget
    assert budget is not None
    original_size = model_bytes(builder.model_in)
    first_size = model_bytes(first.model_path)
    units = ranking.units if ranking is not None else {}

    def build(kept: Sequence[str]) -> Path:
        if not kept:
            return first.model_path
        members = [m for name in kept for m in units[name].members]
        return builder.build(members, "trial").model_path

    def fits(kept: Sequence[str]) -> bool:
        # Float weights cost 3 bytes more each; the Q/DQ nodes they drop are not counted.
        return first_size + sum(units[name].fallback_bytes for name in kept) < original_size

    def reject(path: Path) -> list[str]:
        reasons = [] if path == first.model_path else _size_reasons(path, original_size)
        return reasons + floor(path)

    return fallback_search(
        ranking.order if ranking is not None else [],
        build=build,
        evaluate=lambda path: ev.scorer.metric(path, budget),
        meets_budget=budget.meets,
        max_trials=builder.config.max_trials,
        higher_is_better=budget.higher_is_better,
        improves=budget.improves,
        patience=PATIENCE,
        fits=fits,
        reject=reject,
        progress=progress("Searching layers to keep in float", 0.5, 0.9),
    )


def _size_reasons(path: Path, original_size: int) -> list[str]:
    size = model_bytes(path)
    if size < original_size:
        return []
    return [f"its file ({size:,} bytes) is not smaller than the original ({original_size:,})"]


class _FloorCheck:
    """Why a candidate is below evaluate.quality_floor ([] without a floor, or when it
    passes), measured on the scorer's batches as the report measures the result; once per
    file."""

    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev
        self.seen: dict[Path, list[str]] = {}

    def __call__(self, path: Path) -> list[str]:
        ev = self.ev
        if ev.floor is None:
            return []
        if path not in self.seen:
            self.seen[path] = ev.below_floor(path)
        return self.seen[path]
