"""Accuracy-aware fallback: starting from the fully quantized model, try keeping one more
layer in float per trial, in the order the sensitivity ranking gives, and keep a layer only
when its trial moves the asked metric; stop when the budget is met, when `patience` trials in
a row brought nothing, or at the trial limit. Every trial is recorded and the best admissible
one is kept, so the search never ends with nothing and never with a worse model than the
fully quantized one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Trial:
    index: int
    kept_in_float: tuple[str, ...]
    metric: float
    meets_budget: bool
    model_path: Path
    added: str | None = None  # the layer this trial added to the best trial before it
    improved: bool = True  # it moved the metric, so later trials build on it
    rejected: tuple[str, ...] = ()  # why it may not be the answer (size, quality floor)

    @property
    def admissible(self) -> bool:
        return not self.rejected


@dataclass(frozen=True)
class SearchOutcome:
    best: Trial
    trials: list[Trial]
    stop_reason: str  # why the search ended, in words
    skipped: list[str] = field(default_factory=list)  # layers never tried (would not fit)

    @property
    def met_budget(self) -> bool:
        return self.best.meets_budget and self.best.admissible


def fallback_search(
    ranking: Sequence[str],
    build: Callable[[Sequence[str]], Path],
    evaluate: Callable[[Path], float],
    meets_budget: Callable[[float], bool],
    *,
    max_trials: int,
    higher_is_better: bool = True,
    improves: Callable[[float, float], bool] | None = None,
    patience: int = 2,
    fits: Callable[[Sequence[str]], bool] | None = None,
    reject: Callable[[Path], list[str]] | None = None,
    progress: Callable[[float], None] | None = None,
) -> SearchOutcome:
    """Trial 0 quantizes everything; each later trial keeps the best trial's layers plus the
    next one of `ranking` in float.

    build(kept_in_float) returns a model path, evaluate(path) its metric, meets_budget(metric)
    whether it is good enough, improves(new, best) whether a trial moved the metric (default:
    strictly better). fits(kept) says whether a trial is worth building at all (e.g. it would
    not be larger than the original); layers that do not fit are skipped unbuilt. reject(path)
    gives the reasons a built trial may not be the answer (e.g. below a quality floor). The
    first admissible trial within the budget wins (fewest layers in float, so the smallest
    and fastest); if none is, the best-scoring admissible one that improved is kept, else
    trial 0.
    """
    if max_trials < 1:
        raise ValueError("max_trials must be at least 1")

    def better(new: float, old: float) -> bool:
        if improves is not None:
            return improves(new, old)
        return new > old if higher_is_better else new < old

    planned = min(max_trials, len(ranking) + 1)

    def run_trial(kept: tuple[str, ...], added: str | None, base: Trial | None) -> Trial:
        path = build(kept)
        metric = evaluate(path)
        moved = base is None or better(metric, base.metric)
        rejected = tuple(reject(path)) if reject is not None else ()
        trial = Trial(len(trials), kept, metric, meets_budget(metric), path, added, moved, rejected)
        trials.append(trial)
        if progress is not None:
            progress(min(1.0, len(trials) / planned))
        return trial

    trials: list[Trial] = []
    base = run_trial((), None, None)
    skipped: list[str] = []
    misses = 0
    stop = f"all {len(ranking)} candidate layer(s) were tried"
    if base.meets_budget and base.admissible:
        stop = "the fully quantized model meets the budget"
    else:
        for name in ranking:
            if len(trials) >= max_trials:
                stop = f"the trial limit (max_trials {max_trials}) was reached"
                break
            kept = (*base.kept_in_float, name)
            if fits is not None and not fits(kept):
                skipped.append(name)
                continue
            trial = run_trial(kept, name, base)
            if trial.meets_budget and trial.admissible:
                stop = f"trial {trial.index} meets the budget"
                break
            if trial.improved:
                base, misses = trial, 0
                continue
            misses += 1
            if misses >= patience:
                stop = (
                    f"the last {patience} trials did not improve on trial {base.index}, so the "
                    "layers still to try (less sensitive) were not expected to"
                )
                break
    if progress is not None:
        progress(1.0)
    return SearchOutcome(_answer(trials, higher_is_better), trials, stop, skipped)


def _answer(trials: list[Trial], higher_is_better: bool) -> Trial:
    """The first admissible trial within the budget; else the best admissible one of those
    that improved (a trial that did not is no real step, only more layers in float); else
    trial 0."""
    admissible = [t for t in trials if t.admissible]
    within = [t for t in admissible if t.meets_budget]
    if within:
        return within[0]
    steps = [t for t in admissible if t.improved] or admissible
    if not steps:
        return trials[0]
    pick = max if higher_is_better else min
    # max/min keep the first of equals: the earlier trial, with fewer layers in float.
    return pick(steps, key=lambda t: t.metric)
