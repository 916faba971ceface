from __future__ import annotations

import json

import pytest
import yaml
from pydantic import BaseModel

from compress_engine import EngineError, Recipe, default_recipe
from compress_engine.configs import (
    QUANTIZE_CONFIGS,
    DynamicInt8Config,
    EvaluateConfig,
    QuantizeStep,
    StaticInt8Config,
)

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
    assert recipe.steps[0].quantize == DynamicInt8Config()
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
        (
            "steps: [{quantize: {colour: red}}]",
            "steps.0.quantize.colour: not a setting of mode dynamic-int8",
        ),
        (
            "steps: [{quantize: {mode: fp16, calibration: entropy}}]",
            "steps.0.quantize.calibration: not a setting of mode fp16 (its settings: mode, ",
        ),
        ("steps: [{quantize: {mode: static-int8, op_types: [Conv]}}]", "not a setting of mode"),
        ("steps: [{quantize: {mode: static-int8, calibration: kl}}]", "quantize.calibration"),
        ("steps: [{quantize: {mode: static-int8, samples: 0}}]", "quantize.samples"),
        ("steps: [{quantize: {mode: weight-int4, block_size: 48}}]", "must be a power of two"),
        ("steps: [{quantize: {mode: weight-int4, block_size: 8}}]", "quantize.block_size"),
        ("steps: [{quantize: {mode: weight-int4, accuracy_level: 7}}]", "accuracy_level"),
        ("steps: [{quantize: 3}]", "steps.0.quantize.mode: Input should be 'dynamic-int8'"),
        ("steps: [{quantize: {}}]\nevaluate: {calibration_fraction: 1.5}", "calibration_frac"),
        (
            "steps: [{quantize: {}}]\n"
            "evaluate: {calibration_fraction: 0.5, training_fraction: 0.5}",
            "evaluate: calibration_fraction (0.5) + training_fraction (0.5) is more than 0.95",
        ),
        ("steps: [{quantize: {}}]\nbogus: 1", "bogus: Extra inputs are not permitted"),
        (
            "steps: [{pruning: {amount: 0.5}}]",
            "steps.0: unknown step 'pruning'; available: prune, distill, finetune, quantize",
        ),
        ("steps: [{prune: {amount: 2}}]", "steps.0.prune.amount: Input should be less than"),
        ("steps: [{quantize: {}}, {prune: {}}]", "steps: the quantize step must come last"),
        (
            "steps: [{prune: {method: magnitude}}, {finetune: {}}]",
            "steps: distill or finetune after magnitude pruning would train the zeroed",
        ),
        ("steps: [{quantize: {}, prune: {}}]", "steps.0: each step must be a mapping"),
        ("steps: [{quantize: {}}, {quantize: {}}]", "only one quantize step"),
        ("steps: [{quantize: {op_types: [Foo]}}]", "steps.0.quantize.op_types.0"),
        ("steps: [{quantize: {op_types: []}}]", "steps.0.quantize.op_types"),
        ("version: 2\nsteps: [{quantize: {}}]", "version: Input should be 1"),
        ("steps: [{quantize: {}}]\nexport: [coreml]", "export.0"),
        ("steps: [{quantize: {}}]\ntflite: {precisions: [int4]}", "tflite.precisions.0"),
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
        Recipe.parse("version: 3\nsteps: [{quantize: {mode: fp16, extra: 1, keep_io_types: x}}]")

    lines = str(err.value).splitlines()
    assert lines[0] == "Invalid recipe:"
    assert len(lines) == 4


def test_it_refuses_non_mapping_sources() -> None:
    with pytest.raises(EngineError, match="must be a mapping or YAML"):
        Recipe.parse(42)  # type: ignore[arg-type]


def _fields_without_description(model: type[BaseModel]) -> list[str]:
    return [f"{model.__name__}.{n}" for n, f in model.model_fields.items() if not f.description]


@pytest.mark.parametrize("model", [Recipe, QuantizeStep, EvaluateConfig, *QUANTIZE_CONFIGS])
def test_every_field_has_a_description(model: type[BaseModel]) -> None:
    # Descriptions double as form help text and CLI help.
    assert _fields_without_description(model) == []


def test_json_schema_is_available_for_forms() -> None:
    schema = Recipe.model_json_schema()

    assert "steps" in schema["properties"]
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("static-int8", {"per_channel": True, "calibration": "percentile", "samples": 256}),
        ("fp16", {"keep_io_types": True, "op_block_list": []}),
        ("weight-int4", {"block_size": 32, "symmetric": True, "accuracy_level": None}),
    ],
)
def test_each_mode_has_its_own_defaults_and_round_trips(mode: str, expected: dict) -> None:
    recipe = Recipe.parse(f"steps: [{{quantize: {{mode: {mode}}}}}]")

    config = recipe.steps[0].quantize
    assert config.mode == mode
    assert {k: getattr(config, k) for k in expected} == expected
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_static_int8_settings_are_validated() -> None:
    recipe = Recipe.parse(
        "steps: [{quantize: {mode: static-int8, calibration: entropy, samples: 64,"
        " exclude: [a, a], exclude_op_types: [Softmax]}}]"
    )

    config = recipe.steps[0].quantize
    assert isinstance(config, StaticInt8Config)
    assert config.exclude == ["a"]
    assert config.exclude_op_types == ["Softmax"]


def test_data_split_settings_live_in_evaluate() -> None:
    recipe = Recipe.parse(
        "steps: [{quantize: {}}]\nevaluate: {calibration_fraction: 0.3, max_evaluation_samples: 9}"
    )

    assert recipe.evaluate.calibration_fraction == 0.3
    assert recipe.evaluate.max_evaluation_samples == 9
    assert recipe.evaluate.training_fraction is None  # training shares the calibration split
    three_way = Recipe.parse(
        "steps: [{distill: {}}]\nevaluate: {calibration_fraction: 0.2, training_fraction: 0.75}"
    )
    assert three_way.evaluate.training_fraction == 0.75
