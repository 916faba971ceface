"""The quality floor and task-aware fidelity: a broken result is never presented as success.

Real models throughout: a two-head MLP whose second head int8 quantization destroys
(tests/quality_models.py), and the third-party-like recogniser and detector of
tests/third_party_models.py.
The array-level tests feed OutputComparison the outputs a broken model would give.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import third_party_models as tpm
from compress_engine import Report, compress
from compress_engine.auto import Candidate, choose
from compress_engine.bundle import report_markdown
from compress_engine.cli import format_report
from compress_engine.configs import QualityFloor, Recipe
from compress_engine.measure.agreement import output_kind
from compress_engine.measure.fidelity import OutputComparison
from compress_engine.quality import passes_floor
from quality_models import export_two_heads

FAST = {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 32}


def _recipe(mode: str, **more: Any) -> dict[str, Any]:
    quantize = {"mode": mode, **more.pop("quantize", {})}
    return {"steps": [{"quantize": quantize}], "evaluate": {**FAST, **more}}


def _compare(ref: np.ndarray, got: np.ndarray, name: str = "out", batch: int = 8) -> Any:
    """Fidelity of one output fed batch by batch, as compare_outputs feeds it."""
    comparison = OutputComparison([name])
    for i in range(0, ref.shape[0], batch):
        r, g = ref[i : i + batch], got[i : i + batch]
        comparison.add({"input": r}, [r], [g])
    return comparison.result()


# --- models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quality-models")


@pytest.fixture(scope="module")
def two_heads(models: Path) -> Path:
    return export_two_heads(models / "two_heads.onnx")


@pytest.fixture(scope="module")
def broken_run(two_heads: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, Path]:
    out = tmp_path_factory.mktemp("broken") / "out"
    return compress(two_heads, _recipe("dynamic-int8"), out_dir=out), out


# --- the broken head ---------------------------------------------------------------------


def test_it_marks_a_result_with_a_dead_head_not_recommended(
    broken_run: tuple[Report, Path],
) -> None:
    report, out = broken_run

    scores, aux = report.fidelity.per_output
    assert scores.kind == aux.kind == "class-scores" and scores.metric == "top1_agreement"
    # The healthy head keeps its decisions: all of them with VNNI's 8-bit weights, 31 of 32
    # where this CPU's int8 format is 7-bit weights (no VNNI); the dead one loses most.
    assert scores.agreement >= 0.95 and aux.agreement is not None and aux.agreement < 0.5
    assert aux.per_sample is not None and aux.per_sample.below_floor > 0.5
    assert report.recommended is False
    assert report.quality_reasons and all("'aux_scores'" in r for r in report.quality_reasons)
    assert "top-1 agreement" in report.quality_reasons[0]
    # The files are kept for inspection; report.json carries the verdict.
    assert (out / "model.int8.onnx").exists()
    stored = json.loads((out / "report.json").read_text())
    assert stored["recommended"] is False and stored["quality_reasons"] == report.quality_reasons


def test_report_md_and_the_cli_say_not_recommended(broken_run: tuple[Report, Path]) -> None:
    report, _ = broken_run

    md = report_markdown(report)
    assert "**Not recommended:**" in md.split("## Fidelity")[0]  # above the figures
    assert report.quality_reasons[0] in md
    assert "| `aux_scores` | class-scores | top-1 agreement" in md
    printed = format_report(report)
    assert "NOT RECOMMENDED" in printed and report.quality_reasons[0] in printed


def test_the_floor_is_the_recipes_to_relax(two_heads: Path, tmp_path: Path) -> None:
    lenient = {"min_agreement": 0.0, "max_broken_samples": 1.0}
    report = compress(
        two_heads, _recipe("dynamic-int8", quality_floor=lenient), out_dir=tmp_path / "a"
    )
    assert report.recommended and report.quality_reasons == []
    assert "agreement >= 0" in report.quality_floor


def test_auto_never_returns_a_candidate_below_the_floor(two_heads: Path, tmp_path: Path) -> None:
    # For size: for latency the gate keeps this 0.01 ms model's Gemms in float (quantized they
    # run slower), which also spares the broken head; the floor is what is checked here.
    recipe = _recipe("auto", quantize={"objective": "size"})
    report = compress(two_heads, recipe, out_dir=tmp_path / "on")

    assert report.auto is not None and report.auto.pick is None
    (candidate,) = report.auto.candidates
    assert candidate.mode == "dynamic-int8"
    assert candidate.quality_reasons and "'aux_scores'" in candidate.quality_reasons[0]
    assert "below the quality floor" in report.auto.reason
    assert report.recommended  # the original, handed back unchanged


def test_the_choice_skips_a_smaller_faster_candidate_below_the_floor() -> None:
    original = Candidate("original", 1000, 1.0, True)
    fine = Candidate("dynamic-int8", 300, 0.5, True)
    broken = Candidate("static-int8", 250, 0.4, True, below_floor=True)

    assert choose(original, [fine, broken]).pick == fine
    assert choose(original, [fine, broken], "size").pick == fine
    decision = choose(original, [broken])
    assert decision.pick is None and "below the quality floor" in decision.reason


# --- sequences and dense maps --------------------------------------------------------------


@pytest.fixture(scope="module")
def sequence_run(models: Path) -> Report:
    model = tpm.cnn_sequence_model(models)
    data = tpm.digit_strips_npz(models / "strips.npz", n=48)
    return compress(model, _recipe("static-int8"), data=data, out_dir=models / "seq-out")


@pytest.fixture(scope="module")
def detector_run(models: Path) -> Report:
    model = tpm.dense_map_detector(models)
    data = tpm.blobs_npz(models / "blobs.npz", n=48)
    return compress(model, _recipe("static-int8"), data=data, out_dir=models / "map-out")


def test_a_sequence_output_reports_step_agreement_and_sequence_match(
    sequence_run: Report, models: Path
) -> None:
    (out,) = sequence_run.fidelity.per_output
    assert (out.kind, out.metric, out.metric_label) == (
        "sequence",
        "step_agreement",
        "per-step argmax agreement",
    )
    assert out.agreement is not None and out.agreement > 0.9
    assert out.sequence_match is not None and 0.0 < out.sequence_match <= 1.0
    assert out.per_sample is not None and out.per_sample.score == "steps that agree"
    stored = json.loads((models / "seq-out" / "report.json").read_text())
    assert stored["fidelity"]["per_output"][0]["metric"] == "step_agreement"
    md = report_markdown(sequence_run)
    assert "per-step argmax agreement" in md and "whole-sequence match" in md


def test_a_dense_map_reports_thresholded_iou_and_range_error(
    detector_run: Report, models: Path
) -> None:
    (out,) = detector_run.fidelity.per_output
    assert (out.kind, out.metric) == ("dense-map", "map_iou")
    assert out.map_threshold == 0.5 and out.range_error is not None and out.range_error < 0.5
    assert out.agreement is not None and out.agreement > 0.8
    assert detector_run.recommended
    stored = json.loads((models / "map-out" / "report.json").read_text())
    assert stored["fidelity"]["per_output"][0]["metric_label"] == "IoU of maps thresholded at 0.5"
    assert "IoU of maps thresholded at 0.5" in report_markdown(detector_run)


# --- arrays: what a broken output looks like -------------------------------------------------


def test_output_kinds_follow_shape_names_and_values() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 10)).astype(np.float32)
    unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)
    log_probs = np.log(np.full((4, 6, 5), 0.2, dtype=np.float32))
    prob_map = rng.uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)

    assert output_kind("logits", logits) == "class-scores"
    assert output_kind("embedding", logits) == "embedding"
    assert output_kind("out", unit) == "embedding"
    assert output_kind("log_probs", log_probs) == "sequence"
    assert output_kind("probs", np.exp(log_probs)) == "sequence"  # softmax rows sum to 1
    assert output_kind("prob_map", prob_map) == "dense-map"
    assert output_kind("heat", prob_map[:, 0]) == "dense-map"  # [N, H, W], rows not summing to 1
    assert output_kind("features", prob_map * 5 - 2) == "values"
    assert output_kind("score", logits[:, :1]) == "values"
    assert output_kind("boxes", logits[:, :4]) == "values"  # an argmax of coordinates: no
    # A YOLO head [N, 4 + classes, anchors]: box pixels over sigmoid scores, per anchor.
    yolo = np.concatenate(
        [rng.uniform(0, 320, (2, 4, 2100)), rng.uniform(0, 1, (2, 18, 2100))], axis=1
    ).astype(np.float32)
    assert output_kind("output0", yolo) == "values"
    # Few steps over a large vocabulary stay a sequence: its rows are log-probabilities.
    vocab = rng.standard_normal((2, 4, 64))
    vocab_log_probs = vocab - np.log(np.exp(vocab).sum(axis=2, keepdims=True))
    assert output_kind("out", vocab_log_probs.astype(np.float32)) == "sequence"


def test_a_few_dead_samples_do_not_hide_behind_the_average() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((40, 10))
    got = ref + 0.01 * rng.standard_normal(ref.shape)
    got[::10] = 0.0  # every tenth sample's output dies

    fid = _compare(ref, got, "logits")

    out = fid.summary
    assert out.cosine_similarity is not None and out.cosine_similarity > 0.9  # the average hides it
    assert out.per_sample is not None
    assert out.per_sample.below_floor == pytest.approx(0.1) and out.per_sample.worst == 0.0
    reasons = passes_floor(fid, QualityFloor())
    assert any("10.0% of 40 samples score below 0.5" in r for r in reasons)
    assert passes_floor(fid, QualityFloor(max_broken_samples=0.2, min_agreement=0.5)) == []
    assert passes_floor(fid, None) == []


def test_a_recogniser_decoding_few_inputs_alike_is_below_the_floor() -> None:
    rng = np.random.default_rng(2)
    # 16 strips of 12 steps over blank + 4 symbols: the original decodes "a b c" patterns.
    ids = rng.integers(1, 5, size=(16, 12))
    ids[:, ::3] = 0
    broken = ids.copy()
    broken[2:, 1] = (ids[2:, 1] % 4) + 1  # one step of 14 of 16 strips reads another symbol

    def log_probs(steps: np.ndarray) -> np.ndarray:
        out = np.full((*steps.shape, 5), -8.0)
        np.put_along_axis(out, steps[..., None], -0.01, axis=2)
        return out

    fid = _compare(log_probs(ids), log_probs(broken), "log_probs")

    out = fid.summary
    assert out.kind == "sequence" and out.agreement is not None and out.agreement > 0.9
    assert out.sequence_match == pytest.approx(2 / 16)
    assert out.cosine_similarity is not None and out.cosine_similarity > 0.95
    reasons = passes_floor(fid, QualityFloor())
    assert reasons == [
        "output 'log_probs': only 12.5% of samples decode to the original's sequence, below "
        "the floor of 70%."
    ]


def test_sequence_match_compares_what_ctc_decodes() -> None:
    a = np.array([[0, 1, 1, 0, 2, 0]])
    same_text = np.array([[1, 1, 0, 0, 2, 2]])  # "1 2" either way
    other_text = np.array([[0, 1, 0, 1, 2, 0]])  # "1 1 2"

    def one_hot(ids: np.ndarray) -> np.ndarray:
        return np.eye(3)[ids] * 10.0 - 5.0

    # The blank is the class the original predicts most: 0 here.
    assert _compare(one_hot(a), one_hot(same_text)).summary.sequence_match == 1.0
    assert _compare(one_hot(a), one_hot(other_text)).summary.sequence_match == 0.0


def test_a_dead_map_fails_while_an_empty_one_is_no_reason_for_alarm() -> None:
    _, maps = tpm.blob_images(12, seed=3)  # 1 in each blob's cell, else 0
    dead = _compare(maps, np.zeros_like(maps), "prob_map")
    assert dead.summary.kind == "dense-map" and dead.summary.agreement == 0.0
    assert passes_floor(dead, QualityFloor())

    # No object anywhere: both maps ~0. A cosine says 0; the thresholded maps agree.
    quiet = np.random.default_rng(4).uniform(0, 1e-4, maps.shape).astype(np.float32)
    empty = _compare(quiet, np.zeros_like(quiet), "prob_map")
    assert empty.summary.cosine_similarity == 0.0
    assert empty.summary.agreement is None and empty.summary.per_sample is not None
    assert empty.summary.per_sample.worst == 1.0
    assert empty.summary.range_error is not None and empty.summary.range_error <= 1.0
    assert passes_floor(empty, QualityFloor()) == []


def test_embeddings_are_judged_by_their_nearest_neighbours() -> None:
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((30, 16))
    close = _compare(ref, ref + 0.01 * rng.standard_normal(ref.shape), "embedding")
    assert close.summary.kind == "embedding" and close.summary.metric == "nn_agreement"
    assert close.summary.agreement == 1.0 and close.summary.top1_agreement is None

    shuffled = _compare(ref, rng.permutation(ref), "embedding")
    assert shuffled.summary.agreement is not None and shuffled.summary.agreement < 0.5
    assert passes_floor(shuffled, QualityFloor())


def test_reports_written_before_the_floor_still_load(broken_run: tuple[Report, Path]) -> None:
    stored = broken_run[0].model_dump(mode="json")
    for key in ("recommended", "quality_reasons", "quality_floor"):
        del stored[key]
    fidelity = stored["fidelity"]
    for out in [fidelity["summary"], *fidelity["per_output"]]:
        kept = ("name", "max_abs_diff", "mean_abs_diff", "cosine_similarity", "top1_agreement")
        for key in set(out) - set(kept):
            del out[key]

    old = Report.model_validate(stored)

    assert old.recommended and old.quality_reasons == []
    assert old.fidelity.summary.agreement is None and old.fidelity.summary.per_sample is None
    assert "NOT RECOMMENDED" not in format_report(old)
    assert "Not recommended" not in report_markdown(old)


def test_the_floor_round_trips_in_a_recipe() -> None:
    recipe = Recipe.parse(_recipe("dynamic-int8", quality_floor={"min_agreement": 0.95}))
    assert recipe.evaluate.quality_floor == QualityFloor(min_agreement=0.95)
    assert Recipe.parse(recipe.to_yaml()).evaluate.quality_floor == recipe.evaluate.quality_floor
    assert Recipe.parse(_recipe("dynamic-int8", quality_floor=None)).evaluate.quality_floor is None
