from __future__ import annotations

import json

import pytest
import yaml
from pydantic import BaseModel

from compress_engine import EngineError, Recipe, default_recipe
from compress_engine.configs import EvaluateConfig, QuantizeConfig, QuantizeStep

EXAMPLE = """
version: 1
steps:
  - quantize: {mode: dynamic-int8, per_channel: true, reduce_range: false, op_types: [MatMul, Gemm], exclude: []}
export: [onnx]
evaluate: {latency_runs: 50, warmup: 5, batch_size: 1, fidelity_samples: 16, seed: 0, input_shapes: {input_ids: [1, 128]}}
"""  # noqa: E501


def test_it_parses_the_documented_example() -> None:
    recipe = Recipe.parse(EXAMPLE)

    (step,) = recipe.steps
    assert isinstance(step, QuantizeStep)
    assert step.quantize.mode == "dynamic-int8"
    assert step.quantize.per_channel is True
    assert step.quantize.op_types == ["MatMul", "Gemm"]
    assert recipe.export == ["onnx"]
    assert recipe.evaluate.input_shapes == {"input_ids": [1, 128]}


def test_default_recipe_is_dynamic_int8_with_defaults() -> None:
    recipe = default_recipe()

    assert recipe.version == 1
    assert recipe.steps[0].quantize == QuantizeConfig()
    assert recipe.steps[0].quantize.mode == "dynamic-int8"
    assert "Conv" not in recipe.steps[0].quantize.op_types
    assert recipe.evaluate == EvaluateConfig()


def test_it_round_trips_yaml_json_and_dict() -> None:
    recipe = Recipe.parse(EXAMPLE)

    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    assert Recipe.from_json(recipe.to_json()) == recipe
    assert Recipe.parse(recipe.to_json()) == recipe  # JSON text read as YAML
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.parse(recipe) is recipe


def test_yaml_has_the_documented_shape() -> None:
    data = yaml.safe_load(default_recipe().to_yaml())

    assert list(data) == ["version", "steps", "export", "evaluate"]
    assert list(data["steps"][0]) == ["quantize"]
    assert data["steps"][0]["quantize"]["mode"] == "dynamic-int8"
    assert data["export"] == ["onnx"]
    assert json.loads(json.dumps(data)) == data  # plain JSON types only


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps: [{quantize: {mode: static-int4}}]", "steps.0.quantize.mode: Input should be"),
        ("steps: []", "- steps: List should have at least 1 item"),
        ("steps: [{quantize: {colour: red}}]", "steps.0.quantize.colour: Extra inputs"),
        ("steps: [{quantize: {}}]\nbogus: 1", "bogus: Extra inputs are not permitted"),
        ("steps: [{prune: {amount: 0.5}}]", "steps.0: unknown step 'prune'; available: quantize"),
        ("steps: [{quantize: {}, prune: {}}]", "steps.0: each step must be a mapping"),
        ("steps: [{quantize: {}}, {quantize: {}}]", "only one quantize step"),
        ("steps: [{quantize: {op_types: [Foo]}}]", "steps.0.quantize.op_types.0"),
        ("steps: [{quantize: {op_types: []}}]", "steps.0.quantize.op_types"),
        ("version: 2\nsteps: [{quantize: {}}]", "version: Input should be 1"),
        ("steps: [{quantize: {}}]\nexport: [tflite]", "export.0"),
        ("steps: [{quantize: {}}]\nevaluate: {latency_runs: 0}", "evaluate.latency_runs"),
        ("steps: [{quantize: {}}]\nevaluate: {batch_size: 5000}", "evaluate.batch_size"),
        ("steps: [{quantize: {}}]\nevaluate: {input_shapes: {x: [0]}}", "input_shapes.x.0"),
        ("{}", "steps: Field required"),
        ("steps: [", "not valid YAML"),
        ("- just a list", "must be a YAML mapping"),
    ],
)
def test_it_explains_invalid_recipes(text: str, expected: str) -> None:
    with pytest.raises(EngineError) as err:
        Recipe.parse(text)

    assert expected in str(err.value)
    assert "pydantic" not in str(err.value)  # no links or class names, just field paths


def test_it_lists_every_problem_at_once() -> None:
    with pytest.raises(EngineError) as err:
        Recipe.parse("version: 3\nsteps: [{quantize: {mode: x, extra: 1}}]")

    lines = str(err.value).splitlines()
    assert lines[0] == "Invalid recipe:"
    assert len(lines) == 4


def test_it_refuses_non_mapping_sources() -> None:
    with pytest.raises(EngineError, match="must be a mapping or YAML"):
        Recipe.parse(42)  # type: ignore[arg-type]


def _fields_without_description(model: type[BaseModel]) -> list[str]:
    return [f"{model.__name__}.{n}" for n, f in model.model_fields.items() if not f.description]


@pytest.mark.parametrize("model", [Recipe, QuantizeStep, QuantizeConfig, EvaluateConfig])
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    # Descriptions double as form help text and CLI help.
    assert _fields_without_description(model) == []


def test_json_schema_is_available_for_forms() -> None:
    schema = Recipe.model_json_schema()

    assert "steps" in schema["properties"]
    assert schema["additionalProperties"] is False
