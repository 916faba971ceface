"""The job form's language-model parts: which datasets a version can use, the measurement
settings (the recipe's evaluate.llm, as fields generated from its schema like a step's) and
what the text will be used for.

A language model's recipe is one quantize step (weight-only or llm-auto); its text comes from
a text dataset (.txt / .jsonl) or, without one, from the bundled prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from compress_engine.configs import LLM_MODES, LlmEvaluateConfig, Recipe
from jobs.recipe_builder import BuilderField, field_specs, parse_value
from jobs.recipe_yaml import RecipeText, evaluate_section, from_mapping, read_recipe, yaml_mapping
from registry.models import Dataset, ModelVersion

FIELD_PREFIX = "llm-"
# Prompts hold commas and sentences: they are edited in the YAML, not in a comma-separated field.
_YAML_ONLY = {"prompts"}
BUNDLED_PROSE = "the bundled prose (English text from Python's documentation topics)"


def usable_datasets(version: ModelVersion) -> list[Dataset]:
    """The project's datasets this version can use, newest first: text for a language model,
    arrays and image folders for an ONNX graph."""
    datasets = version.project.datasets.all()
    if version.is_llm:
        return list(datasets.filter(kind=Dataset.Kind.TEXT))
    return list(datasets.exclude(kind=Dataset.Kind.TEXT))


def is_llm_technique(mode: str | None) -> bool:
    return mode in LLM_MODES


def llm_fields(recipe: Recipe | None, recipe_yaml: str) -> list[BuilderField]:
    """evaluate.llm as form fields (named llm-<setting>), with the recipe's values, or the
    YAML's as written when it does not parse, and the schema's error per field."""
    if recipe is not None:
        values: Mapping[str, Any] = recipe.evaluate.llm.model_dump(mode="json")
    else:
        written = evaluate_section(recipe_yaml).get("llm")
        values = written if isinstance(written, Mapping) else {}
    fields = [
        BuilderField(
            spec,
            values.get(spec.name, spec.default),
            input_name=f"{FIELD_PREFIX}{spec.name}",
            input_id=f"{FIELD_PREFIX}{spec.name}",
        )
        for spec in field_specs(LlmEvaluateConfig)
        if spec.name not in _YAML_ONLY
    ]
    try:
        LlmEvaluateConfig.model_validate(values)
    except ValidationError as exc:
        by_name = {f.spec.name: f for f in fields}
        for err in exc.errors(include_url=False):
            target = by_name.get(str(err["loc"][0])) if err["loc"] else None
            if target is not None and not target.error:
                target.error = err["msg"].removeprefix("Value error, ")
    return fields


def with_llm_settings(text: str, data: Mapping[str, Any]) -> RecipeText:
    """The recipe with evaluate.llm's settings as posted (`data` a QueryDict); other settings
    of that section (the prompts) as written. Out-of-range values are written too, so the
    recipe's own check says what is wrong."""
    mapping = yaml_mapping(text)
    if mapping is None:
        return read_recipe(text)  # unparsable: its error shows under the YAML
    evaluate = evaluate_section(text)
    written = evaluate.get("llm")
    llm = dict(written) if isinstance(written, Mapping) else {}
    for spec in field_specs(LlmEvaluateConfig):
        name = f"{FIELD_PREFIX}{spec.name}"
        if spec.name in _YAML_ONLY or name not in data:
            continue
        llm[spec.name] = parse_value(spec, data.getlist(name))  # type: ignore[attr-defined]
    evaluate["llm"] = llm
    mapping["evaluate"] = evaluate
    return from_mapping(mapping)


@dataclass(frozen=True)
class TextUse:
    """What a language-model job does with its text, read off the recipe."""

    source: str  # the dataset's name, or the bundled prose
    window_tokens: int
    evaluation_windows: int
    calibration_windows: int  # 0: the method uses no data (round to nearest)
    seed: int
    prompts: list[str]


def text_use(recipe: Recipe | None, dataset: Dataset | None) -> TextUse | None:
    """None when the recipe does not parse or has no language-model step."""
    if recipe is None or not recipe.is_llm:
        return None
    # A language-model recipe is its one quantize step (Recipe checks it).
    cfg = recipe.steps[0].quantize  # type: ignore[union-attr]
    ev = recipe.evaluate
    return TextUse(
        source=f"the dataset {dataset.name!r}" if dataset is not None else BUNDLED_PROSE,
        window_tokens=ev.llm.window_tokens,
        evaluation_windows=ev.llm.evaluation_windows,
        calibration_windows=cfg.calibration_windows if cfg.calibrated else 0,
        seed=ev.seed,
        prompts=list(ev.llm.prompts),
    )
