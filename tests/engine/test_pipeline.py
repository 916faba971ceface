"""compress()'s stages run one by one on a tiny model: each takes the run and what the stages
before it made, and hands on a typed value (compress_engine.pipeline)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from compress_engine import EngineError, Recipe
from compress_engine.configs import AutoConfig, DynamicInt8Config
from compress_engine.passes import PassContext
from compress_engine.passes.auto import AutoQuantize
from compress_engine.passes.quantize import DynamicInt8Quantize
from compress_engine.pipeline.original import measure_original
from compress_engine.pipeline.state import Progress, Run
from compress_engine.pipeline.steps import run_steps
from compress_engine.pipeline.validate import validate


def _run(model: Path, recipe: Recipe, tmp_path: Path, calls: list[tuple[str, float]]) -> Run:
    work = tmp_path / "work"
    work.mkdir()
    return Run(model, recipe, tmp_path, work, Progress(lambda s, f: calls.append((s, f))))


def test_the_first_stages_hand_each_other_typed_values(
    mlp_path: Path, make_recipe: Callable[..., Recipe], tmp_path: Path
) -> None:
    calls: list[tuple[str, float]] = []
    run = _run(mlp_path, make_recipe(evaluate={"batch_sizes": [4]}), tmp_path, calls)

    original = measure_original(run, None)
    assert original.batch_sizes == [1, 4] and original.feed is original.feeds[1]
    assert original.figures["parameters"] > 0 and original.budget is None
    steps = run_steps(run, original)
    assert steps.last_title == "Dynamic int8 quantization" and steps.last.suffix == "int8"
    assert steps.float_model == mlp_path  # a quantize step leaves the float model as it was
    validated = validate(run, original, steps)
    assert set(validated.feeds) == {1, 4}

    assert [t.name for t in run.timings] == [
        "Measure original",
        "Dynamic int8 quantization",
        "Validate result",
    ]
    assert calls[0] == ("Measuring original model", run.layout.measure_original)
    assert ("Quantizing (dynamic int8)", run.layout.steps[0][0]) in calls
    assert calls[-1] == ("Validating result", run.layout.validate)


def test_a_pass_that_measures_candidates_needs_the_runs_evaluator(
    mlp_path: Path, tmp_path: Path
) -> None:
    ctx = PassContext(work_dir=tmp_path)

    with pytest.raises(EngineError, match="run it through compress"):
        AutoQuantize(AutoConfig(mode="auto")).run(mlp_path, tmp_path / "out.onnx", ctx)
    tuned = DynamicInt8Config(sensitivity=True)
    with pytest.raises(EngineError, match="run it through compress"):
        DynamicInt8Quantize(tuned).run(mlp_path, tmp_path / "out.onnx", ctx)
    # Without tuning it is an ordinary pass.
    res = DynamicInt8Quantize(DynamicInt8Config()).run(mlp_path, tmp_path / "out.onnx", ctx)
    assert res.model_path.is_file() and res.sensitivity is None and res.search is None


def test_progress_is_mapped_onto_the_stage_and_never_goes_back() -> None:
    calls: list[tuple[str, float]] = []
    tracker = Progress(lambda s, f: calls.append((s, f)))

    tracker.stage("a", 0.2, 0.4)
    tracker.sub(0.5)
    tracker.stage("b", 0.1, 0.2)  # an earlier slice does not move the fraction back
    tracker.done()

    mid = pytest.approx(0.3)
    assert calls == [("a", 0.2), ("a", mid), ("b", mid), ("Done", 1.0)]
