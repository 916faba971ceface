"""The job form's recipe YAML and the edits the form makes to it, each parsed once.

The YAML textarea is the one source a job is created from. The form's controls only rewrite
parts of it (the builder its `steps`, the split fields and a chosen image dataset its
`evaluate` section), keeping every other section as written. A result that is a valid recipe
is written the way the engine writes it (Recipe.to_yaml, every setting spelled out); an
invalid one as entered, so the YAML still shows what the form holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from compress_engine import EngineError
from compress_engine.configs import Recipe


@dataclass(frozen=True)
class RecipeText:
    """Recipe YAML as the form shows it, with the recipe it parses to."""

    yaml: str
    recipe: Recipe | None  # None: it does not parse, and `error` says why
    error: str = ""


def read_recipe(text: str) -> RecipeText:
    try:
        return RecipeText(text, Recipe.parse(text))
    except EngineError as exc:
        return RecipeText(text, None, str(exc))


def recipe_text(recipe: Recipe) -> RecipeText:
    return RecipeText(recipe.to_yaml(), recipe)


def yaml_mapping(text: str) -> dict[str, Any] | None:
    """The YAML's top-level mapping, or None when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return dict(data) if isinstance(data, Mapping) else None


def from_mapping(data: dict[str, Any]) -> RecipeText:
    """`data` as recipe YAML: the engine's spelling when valid, else as entered."""
    try:
        return recipe_text(Recipe.from_dict(data))
    except EngineError as exc:
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
        return RecipeText(text, None, str(exc))


def with_steps(text: str, steps: list[dict[str, Any]]) -> RecipeText:
    """The recipe YAML with these `steps`, every other section of `text` as written."""
    data = yaml_mapping(text) or {"version": 1}
    data["steps"] = steps
    return from_mapping(data)


SPLIT_FIELDS = (
    ("calibration_fraction", "split-calibration_fraction", float),
    ("training_fraction", "split-training_fraction", float),
    ("seed", "split-seed", int),
)


def with_split(text: str, fields: Mapping[str, str]) -> RecipeText:
    """The recipe with evaluate.calibration_fraction, training_fraction and seed as typed in
    `fields` (form names, see SPLIT_FIELDS; an empty field drops the key, back to the
    default); out-of-range values are written too, so the recipe's own check says what is
    wrong."""
    data = yaml_mapping(text)
    if data is None:
        return read_recipe(text)  # unparsable: its error shows under the YAML
    evaluate = _evaluate(data)
    for key, name, kind in SPLIT_FIELDS:
        typed = (fields.get(name) or "").strip()
        if not typed:
            evaluate.pop(key, None)
            continue
        try:
            evaluate[key] = kind(typed)
        except ValueError:
            evaluate[key] = typed
    data["evaluate"] = evaluate
    return from_mapping(data)


# The evaluate settings the form's own fields own: a preset chosen after them keeps them.
FORM_EVALUATE_KEYS = (
    "calibration_fraction",
    "training_fraction",
    "seed",
    "image_mean",
    "image_std",
    "llm",  # a language model's measurement settings (jobs.llm_form)
)


def with_preset(text: str, preset: Recipe) -> RecipeText:
    """The preset's recipe, with the split and normalisation `text` sets (the form's own
    fields) kept: choosing a preset before or after them gives the same recipe."""
    evaluate = evaluate_section(text)
    kept = {k: evaluate[k] for k in FORM_EVALUATE_KEYS if k in evaluate}
    made = recipe_text(preset)
    return with_evaluate(made.yaml, kept) if kept else made


NORMALISATION_FIELDS = (("image_mean", "norm-image_mean"), ("image_std", "norm-image_std"))


def with_normalisation(text: str, fields: Mapping[str, str]) -> RecipeText:
    """The recipe with evaluate.image_mean/image_std as typed ("0.485, 0.456, 0.406"; an
    empty field is the default: mean 0, std 1). What does not parse as numbers is written as
    typed, so the recipe's own check says what is wrong."""
    data = yaml_mapping(text)
    if data is None:
        return read_recipe(text)
    evaluate = _evaluate(data)
    for key, name in NORMALISATION_FIELDS:
        typed = (fields.get(name) or "").replace(",", " ").split()
        if not typed:
            evaluate.pop(key, None)
            continue
        try:
            evaluate[key] = [float(v) for v in typed]
        except ValueError:
            evaluate[key] = " ".join(typed)
    data["evaluate"] = evaluate
    return from_mapping(data)


def with_evaluate(text: str, values: Mapping[str, Any]) -> RecipeText:
    """The recipe with these evaluate settings (`text` must hold a YAML mapping)."""
    data = yaml_mapping(text)
    if data is None:
        return read_recipe(text)
    data["evaluate"] = {**_evaluate(data), **values}
    return from_mapping(data)


def evaluate_section(text: str) -> dict[str, Any]:
    """The evaluate section as written (empty when absent or not a mapping)."""
    return _evaluate(yaml_mapping(text) or {})


def _evaluate(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(data["evaluate"]) if isinstance(data.get("evaluate"), Mapping) else {}
