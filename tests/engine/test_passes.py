from __future__ import annotations

import json
import subprocess
import sys

import pytest

from compress_engine import EngineError, Recipe, default_recipe, list_passes
from compress_engine.passes import get_pass, pass_for_step
from compress_engine.passes.quantize import DynamicInt8Quantize


def test_dynamic_int8_is_registered_with_its_capabilities() -> None:
    (info,) = [p for p in list_passes() if p.name == "quantize-dynamic-int8"]

    assert info.step == "quantize" and info.mode == "dynamic-int8"
    assert info.needs_data is False and info.needs_labels is False
    assert info.compute == "light"
    assert info.input_format == info.output_format == "onnx"
    assert info.title and info.description and info.stage


@pytest.mark.parametrize(
    ("name", "mode", "needs_data"),
    [
        ("quantize-static-int8", "static-int8", True),
        ("quantize-fp16", "fp16", False),
        ("quantize-weight-int4", "weight-int4", False),
    ],
)
def test_every_mode_is_registered_with_its_capabilities(
    name: str, mode: str, needs_data: bool
) -> None:
    (info,) = [p for p in list_passes() if p.name == name]

    assert info.step == "quantize" and info.mode == mode
    assert info.needs_data is needs_data and info.needs_labels is False
    assert info.compute == "light"
    recipe = Recipe.parse({"steps": [{"quantize": {"mode": mode}}]})
    assert pass_for_step(recipe.steps[0]).info == info


def test_the_recipe_step_resolves_to_its_pass() -> None:
    step = default_recipe().steps[0]

    technique = pass_for_step(step)

    assert isinstance(technique, DynamicInt8Quantize)
    assert technique.config == step.quantize
    assert get_pass("quantize-dynamic-int8") is DynamicInt8Quantize


def test_unknown_pass_names_are_engine_errors() -> None:
    with pytest.raises(EngineError, match="Unknown technique 'pruning'"):
        get_pass("pruning")


def test_listing_passes_imports_no_heavy_framework(engine_env: dict[str, str]) -> None:
    code = (
        "import sys, json; from compress_engine import list_passes;"
        "infos = [p.model_dump() for p in list_passes()];"
        "print(json.dumps([infos, [m for m in ('torch', 'onnxruntime') if m in sys.modules]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=engine_env
    ).stdout
    infos, heavy = json.loads(out)
    assert heavy == []
    assert {i["name"] for i in infos} == {
        "quantize-dynamic-int8",
        "quantize-static-int8",
        "quantize-fp16",
        "quantize-weight-int4",
        "quantize-auto",
        "quantize-weight-only",
        "quantize-llm-auto",
        "prune",
        "distill",
        "finetune",
    }
