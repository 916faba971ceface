"""The step builder of the job form: technique rows, generated from the engine's recipe
schema, and the recipe steps they stand for.

Nothing here knows a technique's settings by name: the techniques and their order come from
the engine's catalog (compress_engine.techniques), and the fields, their types, defaults, help
texts, choices and bounds from the pydantic models' JSON schema; values are checked by those
same models.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.http import QueryDict
from pydantic import BaseModel, ValidationError

from compress_engine import Technique, insert_position, technique_key
from compress_engine import techniques as engine_techniques
from compress_engine.configs import Recipe


@cache
def techniques() -> dict[str, Technique]:
    """Every technique the engine implements, by key, in recipe order."""
    return {t.key: t for t in engine_techniques()}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    input: str  # bool | int | float | choice | multi | list | text
    description: str
    default: Any
    choices: tuple[Any, ...] = ()
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")

    @property
    def bounds(self) -> str:
        """ "0 ≤ x ≤ 0.95", "> 0", "" for the help text."""
        parts = []
        if self.minimum is not None:
            parts.append(f"{'>' if self.exclusive_minimum else '≥'} {_number(self.minimum)}")
        if self.maximum is not None:
            parts.append(f"{'<' if self.exclusive_maximum else '≤'} {_number(self.maximum)}")
        return ", ".join(parts)

    @property
    def step(self) -> str:
        return "1" if self.input == "int" else "any"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _resolve(schema: dict[str, Any], prop: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if ref:
        return schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    return prop


@cache
def field_specs(config: type[BaseModel]) -> tuple[FieldSpec, ...]:
    """The form fields of one step config, read from its JSON schema."""
    schema = config.model_json_schema()
    specs = []
    for name, prop in schema.get("properties", {}).items():
        if "const" in prop or name == "mode":
            continue  # fixed by the technique itself
        variants = [_resolve(schema, v) for v in prop.get("anyOf", [prop])]
        concrete = [v for v in variants if v.get("type") != "null"]
        base = concrete[0] if concrete else {}
        nullable = len(concrete) < len(variants)
        items = _resolve(schema, base.get("items", {}))
        if "enum" in base:
            kind, choices = "choice", tuple(base["enum"])
        elif base.get("type") == "boolean":
            kind, choices = "bool", ()
        elif base.get("type") == "integer":
            kind, choices = "int", ()
        elif base.get("type") == "number":
            kind, choices = "float", ()
        elif base.get("type") == "array" and "enum" in items:
            kind, choices = "multi", tuple(items["enum"])
        elif base.get("type") == "array":
            kind, choices = "list", ()
        else:
            kind, choices = "text", ()
        if "default" in prop:
            default = prop["default"]
        else:  # default_factory fields carry no default in the schema
            default = config.model_fields[name].get_default(call_default_factory=True)
        minimum = base.get("minimum", base.get("exclusiveMinimum"))
        maximum = base.get("maximum", base.get("exclusiveMaximum"))
        specs.append(
            FieldSpec(
                name=name,
                input=kind,
                description=prop.get("description", ""),
                default=default,
                choices=choices,
                nullable=nullable,
                minimum=minimum,
                maximum=maximum,
                exclusive_minimum="exclusiveMinimum" in base,
                exclusive_maximum="exclusiveMaximum" in base,
            )
        )
    return tuple(specs)


@dataclass
class BuilderField:
    spec: FieldSpec
    value: Any  # typed where it parsed, else the text as typed
    error: str = ""
    input_name: str = ""  # set by number_steps: steps-<index>-<name>
    input_id: str = ""

    @property
    def text(self) -> str:
        """The value as an input shows it."""
        if self.value is None:
            return ""
        if isinstance(self.value, list):
            return ", ".join(str(v) for v in self.value)
        return str(self.value)

    @property
    def selected(self) -> list[str]:
        """multi/choice: the chosen values as text, to mark options."""
        values = self.value if isinstance(self.value, list) else [self.value]
        return [str(v) for v in values if v is not None]


@dataclass
class BuilderStep:
    technique: Technique
    fields: list[BuilderField]
    error: str = ""  # a rule across this step's fields

    def config(self) -> dict[str, Any]:
        values = {f.spec.name: f.value for f in self.fields}
        if self.technique.mode:
            values = {"mode": self.technique.mode, **values}
        return values

    def as_step(self) -> dict[str, Any]:
        return {self.technique.step: self.config()}

    @property
    def has_errors(self) -> bool:
        return bool(self.error) or any(f.error for f in self.fields)


def new_step(key: str, values: Mapping[str, Any] | None = None) -> BuilderStep:
    technique = techniques()[key]
    values = values or {}
    return BuilderStep(
        technique,
        [
            BuilderField(spec, values.get(spec.name, spec.default))
            for spec in field_specs(technique.config)
        ],
    )


def parse_value(spec: FieldSpec, raw: list[str]) -> Any:
    """One posted field to a typed value (pydantic reports what does not parse)."""
    if spec.input == "bool":
        # A hidden "false" precedes the checkbox: the last value posted wins.
        return raw[-1] in ("true", "on") if raw else spec.default
    if spec.input == "multi":
        return [_typed(v, spec.choices) for v in raw if v]
    text = raw[-1].strip() if raw else ""
    if spec.input == "list":
        return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]
    if text == "":
        return None if spec.nullable else spec.default
    if spec.input == "choice":
        return _typed(text, spec.choices)
    if spec.input == "int":
        try:
            return int(text)
        except ValueError:
            return text
    if spec.input == "float":
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _typed(text: str, choices: tuple[Any, ...]) -> Any:
    return next((c for c in choices if str(c) == text), text)


def steps_from_post(data: QueryDict) -> list[BuilderStep]:
    indexes = sorted(
        int(m.group(1)) for key in data if (m := re.fullmatch(r"steps-(\d+)-technique", key))
    )
    steps = []
    for i in indexes:
        key = data.get(f"steps-{i}-technique", "")
        if key not in techniques():
            continue
        technique = techniques()[key]
        values = {
            spec.name: parse_value(spec, data.getlist(f"steps-{i}-{spec.name}"))
            for spec in field_specs(technique.config)
            if f"steps-{i}-{spec.name}" in data
        }
        steps.append(new_step(key, values))
    return steps


def steps_from_recipe(recipe: Recipe) -> list[BuilderStep]:
    """A recipe's steps as builder steps."""
    steps = []
    for step in recipe.steps:
        key = technique_key(step)
        if key in techniques():
            config = getattr(step, techniques()[key].step)
            steps.append(new_step(key, config.model_dump(mode="json")))
    return steps


def insert_step(steps: list[BuilderStep], key: str) -> list[BuilderStep]:
    """Add a step where the engine accepts it (compress_engine.insert_position)."""
    step = new_step(key)
    at = insert_position([s.technique.step for s in steps], step.technique.step)
    return [*steps[:at], step, *steps[at:]]


def number_steps(steps: list[BuilderStep]) -> None:
    """Name every input after its step's position, the way steps_from_post reads them."""
    for i, step in enumerate(steps):
        for f in step.fields:
            f.input_name = f"steps-{i}-{f.spec.name}"
            f.input_id = f"step-{i}-{f.spec.name}"


def validate_steps(steps: list[BuilderStep]) -> None:
    """Per-field errors from each step's own config model (set on the steps)."""
    for step in steps:
        step.error = ""
        for f in step.fields:
            f.error = ""
        try:
            step.technique.config.model_validate(step.config())
        except ValidationError as exc:
            by_name = {f.spec.name: f for f in step.fields}
            for err in exc.errors(include_url=False):
                msg = err["msg"].removeprefix("Value error, ")
                target = by_name.get(str(err["loc"][0])) if err["loc"] else None
                if target is not None:
                    target.error = target.error or msg
                else:
                    step.error = step.error or msg
