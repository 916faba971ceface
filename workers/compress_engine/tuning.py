"""Quantization that holds a budget: the budget, the scorer, per-layer sensitivity and the
accuracy-aware search (the `auto` mode's pass, passes/auto.py, uses the budget and scorer).

The algorithms (ranking, fallback search) live in `search/` and know nothing of ONNX
Runtime; this module binds them to real passes, sessions and data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from compress_engine.configs import (
    DynamicInt8Config,
    EvaluateConfig,
    QuantizeStep,
    StaticInt8Config,
)
from compress_engine.errors import EngineError
from compress_engine.measure.accuracy import AccuracyCounter
from compress_engine.measure.runtime import adapt_feed, create_session
from compress_engine.onnx_files import model_bytes
from compress_engine.passes.base import PassContext, PassResult
from compress_engine.passes.registry import pass_for_step
from compress_engine.report import (
    LayerSensitivityInfo,
    SearchSummary,
    SearchTrial,
)
from compress_engine.search import fallback_search, rank_single_layer_error

if TYPE_CHECKING:
    import onnxruntime

    from compress_engine.data import Dataset

Feed = dict[str, np.ndarray]
Batch = tuple[Feed, "np.ndarray | None"]

# At most this many layers are ranked (the ones with the most weights): each costs a
# quantization and a run over the sensitivity samples.
MAX_RANKED_LAYERS = 64
# Samples the single-layer runs are scored on: enough to order layers, bounded in time.
SENSITIVITY_SAMPLES = 128
# Static int8 calibrates once for all single-layer models and trials where ONNX Runtime can
# reuse ranges (calibration_cache_path, 1.31+); older versions calibrate every build again,
# and then get at most this many samples.
TRIAL_CALIBRATION_SAMPLES = 128
# Op types whose weights the int8 modes store as integers.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Attention", "LSTM"})


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

    def show(self, value: float) -> str:
        if self.metric == "cosine":
            return f"cosine {value:.5f} (budget >= {self.limit:g})"
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
class Builder:
    """Re-runs one quantize pass with extra layers kept in float, each into its own files."""

    config: DynamicInt8Config | StaticInt8Config
    model_in: Path
    work: Path
    seed: int
    data: Dataset | None
    batch_size: int
    built: dict[Path, PassResult] = field(default_factory=dict)
    _count: int = 0

    @property
    def reuses_calibration(self) -> bool:
        from compress_engine.passes.static_quantize import calibration_cache_supported

        return isinstance(self.config, StaticInt8Config) and calibration_cache_supported()

    @property
    def calibration_note(self) -> str:
        if not isinstance(self.config, StaticInt8Config):
            return ""
        if self.reuses_calibration:
            return ", calibrated once and the ranges reused for every build"
        return f", each calibrated on {TRIAL_CALIBRATION_SAMPLES} samples at most"

    def build(self, keep_in_float: Sequence[str], tag: str) -> PassResult:
        self._count += 1
        work = self.work / f"{tag}{self._count}"
        work.mkdir(parents=True)
        update: dict[str, object] = {
            "exclude": [*self.config.exclude, *keep_in_float],
            "accuracy_aware": False,
            "sensitivity": False,
        }
        if isinstance(self.config, StaticInt8Config) and not self.reuses_calibration:
            update["samples"] = min(self.config.samples, TRIAL_CALIBRATION_SAMPLES)
        cfg = self.config.model_copy(update=update)
        technique = pass_for_step(QuantizeStep(quantize=cfg))
        res = technique.run(
            self.model_in,
            work / "model.onnx",
            PassContext(
                work_dir=work,
                seed=self.seed,
                data=self.data,
                batch_size=self.batch_size,
                # Every build here keeps some layers in float, so all share one graph before
                # quantization (optimisation is skipped to keep names) and one set of ranges.
                calibration_cache=self.work / "calibration.json",
            ),
        )
        self.built[res.model_path] = res
        return res


def candidate_layers(
    model_path: Path, cfg: DynamicInt8Config | StaticInt8Config
) -> tuple[list[tuple[str, str]], int]:
    """(node, op type) of named layers with constant weights the mode would quantize, the
    largest weights first, at most MAX_RANKED_LAYERS; and how many there were in all."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            sizes.setdefault(node.output[0], 1)
    if isinstance(cfg, DynamicInt8Config):
        types = set(cfg.op_types)
    else:
        types = set(_WEIGHTED_OPS) - set(cfg.exclude_op_types)
    excluded = set(cfg.exclude)
    found = [
        (n.name, n.op_type, max(sizes[i] for i in n.input if i in sizes))
        for n in model.graph.node
        if n.name
        and n.op_type in types
        and n.name not in excluded
        and any(i in sizes for i in n.input[1:])
    ]
    found.sort(key=lambda t: -t[2])
    return [(name, op) for name, op, _ in found[:MAX_RANKED_LAYERS]], len(found)


@dataclass
class Tuned:
    result: PassResult
    sensitivity: list[LayerSensitivityInfo] | None = None
    search: SearchSummary | None = None
    notes: list[str] = field(default_factory=list)


def tune(
    first: PassResult,
    builder: Builder,
    *,
    budget: Budget | None,
    scorer: Scorer,
    progress: Callable[[str, float, float], Callable[[float], None]],
) -> Tuned:
    """Sensitivity ranking and/or the accuracy-aware search around a fully quantized model.

    progress(label, lo, hi) starts a sub-stage and returns its fraction callback.
    """
    cfg = builder.config
    out = Tuned(result=first)
    search = cfg.accuracy_aware and budget is not None
    first_metric = scorer.metric(first.model_path, budget) if search else None  # type: ignore[arg-type]
    missed = search and first_metric is not None and not budget.meets(first_metric)  # type: ignore[union-attr]
    ranking: list[str] = []
    if cfg.sensitivity or missed:
        layers, found = candidate_layers(builder.model_in, cfg)
        if found > len(layers):
            out.notes.append(
                f"Sensitivity was ranked for the {len(layers)} layers with the most weights, of "
                f"{found} quantizable layers."
            )
        small = scorer.subset(SENSITIVITY_SAMPLES)
        names = [name for name, _ in layers]
        ranked = rank_single_layer_error(
            layers,
            quantize_only=lambda node: (
                builder.build([n for n in names if n != node], "single").model_path
            ),
            run=small.outputs,
            reference=small.reference,
            progress=progress("Ranking layer sensitivity", 0.0, 0.5),
        )
        ranking = [layer.node for layer in ranked]
        out.sensitivity = [
            LayerSensitivityInfo(node=r.node, op_type=r.op_type, relative_error=r.relative_error)
            for r in ranked
        ]
        out.notes.append(
            f"Layer sensitivity: each of {len(layers)} layers was quantized alone and scored on "
            f"{small.samples} samples (relative error of the first output"
            f"{builder.calibration_note})."
        )
    if not search or budget is None:
        return out

    def build(kept: Sequence[str]) -> Path:
        if not kept:
            return first.model_path
        return builder.build(kept, "trial").model_path

    builder.built[first.model_path] = first
    outcome = fallback_search(
        ranking if missed else [],
        build=build,
        evaluate=lambda path: scorer.metric(path, budget),
        meets_budget=budget.meets,
        max_trials=cfg.max_trials,
        higher_is_better=budget.higher_is_better,
        progress=progress("Searching layers to keep in float", 0.5, 1.0),
    )
    out.result = builder.built[outcome.best.model_path]
    out.search = SearchSummary(
        metric=budget.metric,
        budget=budget.limit,
        met=outcome.met_budget,
        trials=[
            SearchTrial(
                index=t.index,
                kept_in_float=list(t.kept_in_float),
                metric=t.metric,
                meets_budget=t.meets_budget,
                size_bytes=model_bytes(t.model_path),
            )
            for t in outcome.trials
        ],
        chosen=outcome.best.index,
        samples=scorer.samples,
    )
    best = outcome.best
    if not missed:
        out.notes.append(
            f"Accuracy-aware: the fully quantized model is within the budget "
            f"({budget.show(best.metric)}); no layer had to stay in float."
        )
    elif outcome.met_budget:
        out.notes.append(
            f"Accuracy-aware: the fully quantized model missed the budget "
            f"({budget.show(outcome.trials[0].metric)}); keeping {best.index} most sensitive "
            f"layer(s) in float meets it ({budget.show(best.metric)}), trial {best.index} of "
            f"{len(outcome.trials)} tried."
        )
    else:
        out.notes.append(
            f"Accuracy-aware: no trial met the budget within {len(outcome.trials)} trial(s); "
            f"the best one, trial {best.index} ({budget.show(best.metric)}, "
            f"{len(best.kept_in_float)} layer(s) in float), was kept. Raise max_trials, relax "
            "the budget, or try another mode."
        )
    capped = isinstance(cfg, StaticInt8Config) and cfg.samples > TRIAL_CALIBRATION_SAMPLES
    if capped and best.index > 0 and not builder.reuses_calibration:
        out.notes.append(
            f"The kept trial was calibrated on at most {TRIAL_CALIBRATION_SAMPLES} samples "
            f"(not {cfg.samples}) to bound the search time."
        )
    return out
