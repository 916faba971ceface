"""A job's readable title: model version · preset (or steps) · dataset.

Everywhere a job is listed (project jobs table, model version page, compare, the API) it is
named by what it did, not by a UUID prefix. The preset is the one the recipe's steps and
exports match (compress_engine.matching_preset); a custom recipe is named by its steps, as
the catalog titles them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.json import KT

from compress_engine import EngineError, matching_preset, technique_key, techniques
from compress_engine.configs import Recipe

SEPARATOR = " · "


def with_title_parts(jobs: QuerySet[Any]) -> QuerySet[Any]:
    """The recipe parts a title needs, read in SQL: a jobs table never loads whole recipes
    (or any other wide JSON column) to name its rows."""
    return jobs.annotate(
        title_steps=KT("recipe__steps"),
        title_export=KT("recipe__export"),
        title_tflite=KT("recipe__tflite"),
    )


def recipe_title(recipe: Recipe) -> str:
    """The preset's title, or the steps' titles in order (with "+ TFLite" when exported)."""
    preset = matching_preset(recipe)
    if preset is not None:
        return preset.title
    titles = {t.key: t.title for t in techniques()}
    steps = [titles.get(technique_key(step), technique_key(step)) for step in recipe.steps]
    text = " → ".join(steps) or "Measure only"
    return f"{text} + TFLite" if "tflite" in recipe.export else text


@lru_cache(maxsize=512)
def _title_of_parts(steps: str, export: str, tflite: str) -> str:
    source: dict[str, Any] = {"version": 1, "steps": json.loads(steps)}
    if export:
        source["export"] = json.loads(export)
    if tflite:
        source["tflite"] = json.loads(tflite)
    try:
        return recipe_title(Recipe.from_dict(source))
    except (EngineError, ValueError):
        return "Unreadable recipe"


def parts_title(steps: Any, export: Any, tflite: Any) -> str:
    """recipe_title from the parts with_title_parts read (JSON text, or None)."""
    return _title_of_parts(_as_text(steps) or "[]", _as_text(export), _as_text(tflite))


def compose(version_name: str, version: int, recipe_part: str, dataset_name: str | None) -> str:
    parts = [f"{version_name} v{version}", recipe_part]
    if dataset_name:
        parts.append(dataset_name)
    return SEPARATOR.join(parts)


def _as_text(value: Any) -> str:
    # KT gives JSON text on PostgreSQL and SQLite alike; a decoded value is tolerated too.
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


def job_recipe_title(job: Any) -> str:
    if hasattr(job, "title_steps"):  # annotated by with_title_parts
        return parts_title(job.title_steps, job.title_export, job.title_tflite)
    recipe = job.recipe or {}
    return _title_of_parts(
        json.dumps(recipe.get("steps", [])),
        json.dumps(recipe["export"]) if "export" in recipe else "",
        json.dumps(recipe["tflite"]) if "tflite" in recipe else "",
    )


def job_title(job: Any) -> str:
    """model version · preset or steps · dataset (the dataset part only when there is one)."""
    version = job.model_version
    dataset = job.dataset.name if job.dataset_id is not None else None
    return compose(version.name, version.version, job_recipe_title(job), dataset)
