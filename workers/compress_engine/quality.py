"""The quality floor: whether a result keeps enough of the original's behaviour to be
recommended, in reasons a user can read.

`passes_floor` judges a measured Fidelity (the report's, or a candidate's from
`candidate_fidelity`); the report, `auto` and accuracy-aware search all ask it, so a result
they hand back as their answer is never one the report would mark *not recommended*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress_engine.configs import QualityFloor
from compress_engine.measure.fidelity import DEFAULT_SAMPLE_FLOOR, compare_outputs
from compress_engine.report import Fidelity, OutputFidelity

if TYPE_CHECKING:
    import onnxruntime


def passes_floor(fidelity: Fidelity, floor: QualityFloor | None) -> list[str]:
    """Why the result is below the floor, one reason per failed check; [] = it passes (and
    always with no floor)."""
    if floor is None:
        return []
    reasons: list[str] = []
    for out in fidelity.per_output:
        reasons += _output_reasons(out, floor)
    return reasons


def _output_reasons(out: OutputFidelity, floor: QualityFloor) -> list[str]:
    name = f"output {out.name!r}"
    if out.cosine_similarity is None:
        return [f"{name} contains NaN or Inf."]
    reasons = []
    if out.agreement is not None and out.agreement < floor.min_agreement:
        reasons.append(
            f"{name}: {out.metric_label} {out.agreement:.1%}, below the floor of "
            f"{floor.min_agreement:.0%}."
        )
    matched = out.sequence_match
    if matched is not None and matched < floor.min_sequence_match:
        reasons.append(
            f"{name}: only {matched:.1%} of samples decode to the original's sequence, below "
            f"the floor of {floor.min_sequence_match:.0%}."
        )
    spread = out.per_sample
    if spread is not None:
        below = spread.below_floor
        if below > floor.max_broken_samples:
            reasons.append(
                f"{name}: {below:.1%} of {spread.samples} samples score below "
                f"{spread.floor:g} ({spread.score}; worst {spread.worst:.3f}), more than the "
                f"{floor.max_broken_samples:.0%} allowed."
            )
    return reasons


def describe_floor(floor: QualityFloor | None) -> str:
    """The floor in words, for the report."""
    if floor is None:
        return "none (evaluate.quality_floor is null)"
    return (
        f"task-aware agreement >= {floor.min_agreement:g} for every output, whole-sequence "
        f"match >= {floor.min_sequence_match:g} for sequences, and at most "
        f"{floor.max_broken_samples:.0%} of samples scoring below {floor.min_sample_score:g}"
    )


def sample_floor(floor: QualityFloor | None) -> float:
    """The per-sample score below which fidelity counts a sample as broken."""
    return DEFAULT_SAMPLE_FLOOR if floor is None else floor.min_sample_score


def candidate_fidelity(
    original: onnxruntime.InferenceSession,
    candidate: Path,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    providers: Sequence[str],
    threads: int,
    floor: QualityFloor | None,
) -> Fidelity:
    """Every output of a candidate model file against the original's on `feeds` (e.g. the
    scorer's evaluation batches), measured as the report measures the result."""
    from compress_engine.measure.runtime import create_session

    session = create_session(candidate, providers=list(providers), threads=threads)
    feeds = list(feeds)
    return compare_outputs(
        original, session, feeds, total=len(feeds), sample_floor=sample_floor(floor)
    )


def check_candidate(
    original: onnxruntime.InferenceSession,
    candidate: Path,
    feeds: Iterable[Mapping[str, np.ndarray]],
    *,
    providers: Sequence[str],
    threads: int,
    floor: QualityFloor | None,
) -> list[str]:
    """passes_floor of a candidate model file: [] when it may be handed back as an answer."""
    if floor is None:
        return []
    fidelity = candidate_fidelity(
        original, candidate, feeds, providers=providers, threads=threads, floor=floor
    )
    return passes_floor(fidelity, floor)
