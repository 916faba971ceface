"""The engine's catalog: techniques in recipe order, what a recipe needs, which steps train,
the messages for missing data (the same compress() raises) and the stage plan."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compress_engine import (
    EngineError,
    Recipe,
    compress,
    insert_position,
    missing_data,
    stage_plan,
    step_needs,
    techniques,
    training_steps,
)

WORKERS = Path(__file__).resolve().parents[2] / "workers"


def _recipe(*steps: dict, **sections: object) -> Recipe:
    return Recipe.parse({"version": 1, "steps": list(steps), **sections})


def test_it_lists_the_techniques_in_recipe_order_without_torch():
    keys = [t.key for t in techniques()]
    assert keys[:3] == ["prune", "distill", "finetune"]
    assert "quantize:static-int8" in keys and "quantize:dynamic-int8" in keys
    code = (
        "import sys, compress_engine as e; e.techniques(); "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(WORKERS)},
    ).stdout
    assert out.strip() == "[]"


def test_it_puts_torch_steps_before_the_quantize_step():
    assert insert_position(["prune", "quantize"], "distill") == 1
    assert insert_position(["prune"], "quantize") == 1
    assert insert_position(["quantize"], "quantize") == 1


@pytest.mark.parametrize(
    ("steps", "kinds"),
    [
        ([{"distill": {"epochs": 1}}], ["distill"]),
        ([{"finetune": {}}], ["finetune"]),
        ([{"prune": {"iterations": 3, "recover_epochs": 2}}], ["prune"]),
        ([{"prune": {"importance": "taylor"}}], []),
        ([{"prune": {"iterations": 3, "recover_epochs": 0}}], []),
        ([{"quantize": {"mode": "static-int8"}}], []),
    ],
)
def test_it_knows_which_steps_train(steps, kinds):
    assert training_steps(_recipe(*steps)) == kinds


def test_it_says_what_each_step_needs():
    needs = step_needs(_recipe({"finetune": {}}, {"quantize": {"mode": "static-int8"}}))
    assert [(n.step, n.data, n.labels) for n in needs] == [
        ("finetune", "training", True),
        ("quantize", "calibration", False),
    ]


def test_its_missing_data_messages_are_the_ones_compress_raises(cnn_path, tmp_path):
    static = _recipe({"quantize": {"mode": "static-int8"}})
    message = missing_data(static, has_data=False, has_labels=False)
    assert message is not None and "needs calibration data" in message
    with pytest.raises(EngineError) as raised:
        compress(cnn_path, static, out_dir=tmp_path / "a")
    assert str(raised.value) == message

    finetune = _recipe({"finetune": {"epochs": 1}})
    message = missing_data(finetune, has_data=True, has_labels=False)
    assert message is not None and "trains on labels" in message
    data = tmp_path / "x.npz"
    np.savez(data, x=np.zeros((4, 1, 8, 8), dtype=np.float32))
    with pytest.raises(EngineError) as raised:
        compress(cnn_path, finetune, data, out_dir=tmp_path / "b")
    assert str(raised.value) == message

    assert missing_data(static, has_data=True, has_labels=False) is None
    assert missing_data(_recipe({"quantize": {}}), has_data=False, has_labels=False) is None


def test_its_stage_plan_tiles_the_engines_progress():
    plan = stage_plan(_recipe({"prune": {}}, {"quantize": {}}, export=["onnx", "tflite"]))
    assert [s.name for s in plan] == [
        "Measuring the original model",
        "Step 1: Pruning",
        "Step 2: Dynamic int8 quantization",
        "Validating the result",
        "Measuring the compressed model",
        "Checking artifacts and converting to TFLite",
        "Writing the report",
    ]
    assert plan[0].lo == 0.0 and plan[-1].hi == 1.0
    assert all(a.hi == pytest.approx(b.lo) for a, b in itertools.pairwise(plan))
    assert [s.name for s in stage_plan(None)][1] == "Step 1: Compression"


def test_a_step_that_trains_gets_most_of_the_progress_bar():
    # Distillation takes most of a prune-distill run's time, so it takes most of its bar:
    # per-epoch progress then visibly moves the job's overall progress.
    plan = stage_plan(
        _recipe({"prune": {}}, {"distill": {"epochs": 3}}, {"quantize": {"mode": "static-int8"}})
    )
    widths = {s.name: s.hi - s.lo for s in plan}
    assert widths["Step 2: Distillation"] > 0.5
    assert widths["Step 2: Distillation"] > 10 * widths["Step 1: Pruning"]
    assert plan[0].lo == 0.0 and plan[-1].hi == 1.0
    assert all(a.hi == pytest.approx(b.lo) for a, b in itertools.pairwise(plan))
    # A recipe that trains nothing keeps the layout it always had: the steps share 0.35-0.50.
    light = stage_plan(_recipe({"prune": {}}, {"quantize": {}}))
    assert (light[1].lo, light[2].hi, light[3].lo) == (0.35, 0.5, 0.5)
