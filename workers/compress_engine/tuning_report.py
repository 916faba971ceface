"""What the accuracy-aware search says about its trials: each trial's size and latency (timed
interleaved with the original and its identical copy, so a trial is called slower only
beyond the noise band), and the notes that explain the outcome in numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from compress_engine.measure.latency import measure_against_copy
from compress_engine.measure.runtime import adapt_feed, create_session
from compress_engine.onnx_files import model_bytes
from compress_engine.report import SearchSummary, SearchTrial

if TYPE_CHECKING:
    from compress_engine.passes.base import Evaluator
    from compress_engine.search import Trial
    from compress_engine.tuning import Budget

# Interleaved rounds each trial is timed for: enough to tell a real slowdown from noise on
# the trial that matters, cheap next to building it.
TRIAL_LATENCY_RUNS = 20
TRIAL_LATENCY_WARMUP = 2
# The kept trial is said to cost speed when its speed-up is this factor below trial 0's.
SLOWER_THAN_FIRST = 1.1


def summary_trials(
    trials: Sequence[Trial], ev: Evaluator, progress: Callable[[float], None]
) -> list[SearchTrial]:
    """The report's row per trial, each timed against the original."""
    rows = []
    for k, t in enumerate(trials):
        p50, speedup, speed = _time(t, ev)
        rows.append(
            SearchTrial(
                index=t.index,
                kept_in_float=list(t.kept_in_float),
                metric=t.metric,
                meets_budget=t.meets_budget,
                size_bytes=model_bytes(t.model_path),
                added=t.added,
                improved=t.improved,
                rejected=list(t.rejected),
                p50_ms=p50,
                speedup=speedup,
                speed=speed,
            )
        )
        progress((k + 1) / len(trials))
    return rows


def _time(trial: Trial, ev: Evaluator) -> tuple[float | None, float | None, str | None]:
    """(p50 ms, original p50 / trial p50, faster/slower/unchanged by the noise band)."""
    session = create_session(trial.model_path, providers=ev.providers, threads=ev.threads)
    original, (latency,), band = measure_against_copy(
        (ev.original, adapt_feed(ev.original, ev.latency_feed)),
        ev.original_copy,
        [(session, adapt_feed(session, ev.latency_feed))],
        warmup=min(ev.warmup, TRIAL_LATENCY_WARMUP),
        runs=TRIAL_LATENCY_RUNS,
        batch_size=ev.latency_batch,
        threads=ev.threads,
    )
    speedup = original.p50_ms / latency.p50_ms if latency.p50_ms > 0 else None
    return latency.p50_ms, speedup, None if speedup is None else band.verdict(speedup)


def search_notes(search: SearchSummary, budget: Budget, *, missed: bool) -> list[str]:
    """The outcome in words: what was kept and why the search stopped, what it cost."""
    trials = search.trials
    best = trials[search.chosen]
    first = trials[0]
    kept = ", ".join(best.kept_in_float)
    notes: list[str] = []
    if not missed:
        notes.append(
            f"Accuracy-aware: the fully quantized model is within the budget "
            f"({budget.show(best.metric)}); no layer had to stay in float."
        )
    elif search.met:
        notes.append(
            f"Accuracy-aware: the fully quantized model missed the budget "
            f"({budget.show(first.metric)}); keeping {len(best.kept_in_float)} layer(s) in "
            f"float ({kept}) meets it ({budget.show(best.metric)}), trial {best.index} of "
            f"{len(trials)} tried."
        )
    else:
        which = (
            f"the best one, trial {best.index} ({budget.show(best.metric)}, "
            f"{len(best.kept_in_float)} layer(s) in float{': ' + kept if kept else ''}), was "
            "kept"
        )
        notes.append(
            f"Accuracy-aware: no trial met the budget in {len(trials)} trial(s); {which}. The "
            f"search stopped because {search.stop_reason}. Raise max_trials, relax the budget, "
            "or try another mode."
        )
    if search.skipped:
        notes.append(
            f"{len(search.skipped)} layer(s) were not tried in float because the file would "
            f"no longer be smaller than the original ({search.original_size_bytes:,} bytes): "
            f"{', '.join(search.skipped[:5])}{', ...' if len(search.skipped) > 5 else ''}."
        )
    if best.rejected:  # only trial 0 is ever kept with reasons: the quality floor's
        notes.append(
            "No trial passed the quality floor, so none is handed back as the search's answer; "
            "the result is the fully quantized model, marked not recommended ("
            + "; ".join(r.rstrip(".") for r in best.rejected)
            + ")."
        )
    notes += _speed_notes(best, first)
    return notes


def _speed_notes(best: SearchTrial, first: SearchTrial) -> list[str]:
    """What keeping layers in float cost in speed (whether the result is slower than the
    original is the result measurement's note, on the full timing)."""
    # Each trial is timed against the original in rounds of its own: compare their ratios.
    fast, base = best.speedup, first.speedup
    if best.index == 0 or fast is None or base is None or fast >= base / SLOWER_THAN_FIRST:
        return []
    return [
        f"Keeping {len(best.kept_in_float)} layer(s) in float costs speed: {fast:.2f}x the "
        f"original's speed against {base:.2f}x fully quantized (each trial's latency is in "
        "the search table)."
    ]
