"""Accuracy-aware fallback: keep the most sensitive layers in float, one more per trial,
until the result meets its budget or the trial limit is reached. Every trial is recorded and
the best result so far is always kept, so the search never ends with nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Trial:
    index: int
    kept_in_float: tuple[str, ...]
    metric: float
    meets_budget: bool
    model_path: Path


@dataclass(frozen=True)
class SearchOutcome:
    best: Trial
    trials: list[Trial]

    @property
    def met_budget(self) -> bool:
        return self.best.meets_budget


def fallback_search(
    ranking: Sequence[str],
    build: Callable[[Sequence[str]], Path],
    evaluate: Callable[[Path], float],
    meets_budget: Callable[[float], bool],
    *,
    max_trials: int,
    higher_is_better: bool = True,
    progress: Callable[[float], None] | None = None,
) -> SearchOutcome:
    """Trial 0 quantizes everything; trial k keeps ranking[:k] in float.

    build(kept_in_float) returns a model path, evaluate(path) its metric (e.g. accuracy or
    cosine similarity), meets_budget(metric) whether it is good enough. The first trial that
    meets the budget wins (fewest layers in float, so the smallest and fastest); if none does,
    the best-scoring trial is kept and the outcome says the budget was missed.
    """
    if max_trials < 1:
        raise ValueError("max_trials must be at least 1")
    limit = min(max_trials, len(ranking) + 1)
    trials: list[Trial] = []
    for k in range(limit):
        kept = tuple(ranking[:k])
        path = build(kept)
        metric = evaluate(path)
        trial = Trial(k, kept, metric, meets_budget(metric), path)
        trials.append(trial)
        if progress is not None:
            progress((k + 1) / limit)
        if trial.meets_budget:
            return SearchOutcome(best=trial, trials=trials)
    pick = max if higher_is_better else min
    return SearchOutcome(best=pick(trials, key=lambda t: t.metric), trials=trials)
