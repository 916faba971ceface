"""Which preset a model starts from (compress_engine.suggest_preset), and which preset a recipe
was made from (compress_engine.matching_preset).

The old default, dynamic int8 (`fast-int8`), quantizes only MatMul/Gemm weights: on a CNN it
touched the last Gemm and nothing else, and said nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compress_engine import (
    PRESETS,
    Recipe,
    inspect_onnx,
    matching_preset,
    suggest_preset,
)


def test_it_suggests_static_int8_for_a_cnn_with_a_dataset(cnn_path: Path) -> None:
    suggestion = suggest_preset(inspect_onnx(cnn_path), has_dataset=True)
    assert suggestion.preset.name == "static-int8"
    assert "convolutional" in suggestion.reason
    assert "calibrated on your dataset" in suggestion.reason


def test_it_suggests_auto_for_a_cnn_without_a_dataset(cnn_path: Path) -> None:
    suggestion = suggest_preset(inspect_onnx(cnn_path), has_dataset=False)
    assert suggestion.preset.name == "auto"
    assert "no dataset" in suggestion.reason


@pytest.mark.parametrize("has_dataset", [True, False])
def test_it_suggests_dynamic_int8_for_a_matmul_model(mlp_path: Path, has_dataset: bool) -> None:
    suggestion = suggest_preset(inspect_onnx(mlp_path), has_dataset=has_dataset)
    assert suggestion.preset.name == "fast-int8"
    assert "MatMul/Gemm-heavy" in suggestion.reason


def test_it_reads_op_counts_as_a_mapping_too() -> None:
    # The platform stores a model version's op counts; a transformer block: MatMul-heavy.
    assert suggest_preset({"MatMul": 12, "Conv": 1}, False).preset.name == "fast-int8"
    # More convolutions than fully connected layers: a CNN with a classifier head.
    assert suggest_preset({"Conv": 3, "Gemm": 1}, True).preset.name == "static-int8"
    assert suggest_preset({"Relu": 2, "Add": 1}, True).preset.name == "auto"


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_recognised_in_its_own_recipe(name: str) -> None:
    recipe = PRESETS[name].recipe()
    assert matching_preset(recipe) is PRESETS[name]
    # Evaluate settings (split, normalisation, timing) do not make it a custom recipe.
    source = recipe.model_dump(mode="json")
    source["evaluate"].update(image_mean=[0.5], image_std=[0.25], calibration_fraction=0.3)
    assert matching_preset(Recipe.from_dict(source)) is PRESETS[name]


def test_a_changed_step_is_a_custom_recipe() -> None:
    source = PRESETS["static-int8"].recipe().model_dump(mode="json")
    source["steps"][0]["quantize"]["calibration"] = "minmax"
    assert matching_preset(Recipe.from_dict(source)) is None
    # The same steps with other files: the mobile preset exports TFLite, prune-distill-int8 not.
    mobile = PRESETS["mobile-tflite-int8"].recipe().model_dump(mode="json")
    mobile["export"] = ["onnx"]
    assert matching_preset(Recipe.from_dict(mobile)) is PRESETS["prune-distill-int8"]
