"""The job form: a step builder generated from the engine's recipe schema, kept in sync with
the YAML recipe that is actually submitted.

Nothing here knows a technique's settings by name: the fields, their types, defaults, help
texts, choices and bounds come from the pydantic models' JSON schema, and values are checked
by those same models. The YAML textarea stays the one source the job is created from; the
builder only regenerates it (its `steps`; the other sections are kept as written).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import yaml
from django.http import QueryDict
from pydantic import BaseModel, ValidationError

from accounts.models import User
from jobs.services import JobRejected, preflight_job
from registry.models import Dataset, ModelVersion

DEFAULT_PRESET = "fast-int8"


# --- techniques and their fields, from the schema ------------------------------------------


@dataclass(frozen=True)
class Technique:
    key: str  # "prune", "distill", "finetune", "quantize:static-int8", ...
    kind: str  # the recipe step key
    mode: str | None  # quantize only
    title: str
    description: str
    needs_data: bool
    needs_labels: bool
    config: type[BaseModel]


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


@cache
def techniques() -> dict[str, Technique]:
    """Every step kind (and quantize mode) the engine implements, in recipe order."""
    from compress_engine.configs import (
        QUANTIZE_CONFIGS,
        QUANTIZE_MODES,
        TORCH_STEP_KINDS,
        DistillStep,
        FinetuneStep,
        PruneStep,
    )
    from compress_engine.passes import list_passes

    infos = {(p.step, p.mode): p for p in list_passes()}
    step_models = {"prune": PruneStep, "distill": DistillStep, "finetune": FinetuneStep}
    configs: list[tuple[str, str | None, type[BaseModel]]] = [
        (kind, None, step_models[kind].model_fields[kind].annotation)  # type: ignore[misc]
        for kind in TORCH_STEP_KINDS
    ]
    configs += [("quantize", m, c) for m, c in zip(QUANTIZE_MODES, QUANTIZE_CONFIGS, strict=True)]
    out = {}
    for kind, mode, config in configs:
        info = infos.get((kind, mode))
        if info is None:  # a schema entry this engine version has no pass for
            continue
        key = f"{kind}:{mode}" if mode else kind
        out[key] = Technique(
            key=key,
            kind=kind,
            mode=mode,
            title=info.title,
            description=info.description,
            needs_data=info.needs_data,
            needs_labels=info.needs_labels,
            config=config,
        )
    return out


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


# --- builder state -------------------------------------------------------------------------


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
        return {self.technique.kind: self.config()}

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


def _parse_value(spec: FieldSpec, raw: list[str]) -> Any:
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
            spec.name: _parse_value(spec, data.getlist(f"steps-{i}-{spec.name}"))
            for spec in field_specs(technique.config)
            if f"steps-{i}-{spec.name}" in data
        }
        steps.append(new_step(key, values))
    return steps


def steps_from_recipe(recipe: Any) -> list[BuilderStep]:
    """A parsed compress_engine Recipe's steps as builder steps."""
    from compress_engine.configs import step_kind

    steps = []
    for step in recipe.steps:
        kind = step_kind(step)
        config = getattr(step, kind)
        mode = getattr(config, "mode", None) if kind == "quantize" else None
        key = f"{kind}:{mode}" if mode else kind
        if key in techniques():
            steps.append(new_step(key, config.model_dump(mode="json")))
    return steps


def insert_step(steps: list[BuilderStep], key: str) -> list[BuilderStep]:
    """Add a step where the engine accepts it: prune, distill and finetune go before the
    quantize step (the engine refuses them after it); anything else goes last."""
    step = new_step(key)
    at = len(steps)
    if step.technique.kind != "quantize":
        at = next((i for i, s in enumerate(steps) if s.technique.kind == "quantize"), at)
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


# --- the whole form ------------------------------------------------------------------------


@dataclass
class JobForm:
    """What the job form shows: the builder, the YAML, the dataset and what is wrong."""

    version: ModelVersion
    recipe_yaml: str
    steps: list[BuilderStep]
    dataset: Dataset | None = None
    preset: Any = None  # compress_engine Preset, when the recipe came from one
    recipe_error: str = ""  # the YAML as a whole (parse errors, step order, budgets)
    dataset_error: str = ""  # what the recipe needs from the dataset, or teachers
    datasets: list[Dataset] = field(default_factory=list)

    @property
    def can_submit(self) -> bool:
        return not (
            self.recipe_error or self.dataset_error or any(s.has_errors for s in self.steps)
        )

    @property
    def presets(self) -> list[Any]:
        from compress_engine.presets import PRESETS

        return list(PRESETS.values())

    @property
    def techniques(self) -> list[Technique]:
        return list(techniques().values())

    @property
    def split(self) -> DataSplit:
        return data_split(self)


def _yaml_mapping(text: str) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return dict(data) if isinstance(data, Mapping) else None


def compose_yaml(steps: list[BuilderStep], base_yaml: str) -> str:
    """The recipe YAML for `steps`, keeping every other section of `base_yaml` as written.

    A valid recipe is written the way the engine writes it (Recipe.to_yaml, every setting
    spelled out); an invalid one as entered, so the YAML still shows what the builder holds.
    """
    data = _yaml_mapping(base_yaml) or {"version": 1}
    data["steps"] = [s.as_step() for s in steps]
    return _recipe_text(data)


def _recipe_text(data: dict[str, Any]) -> str:
    """`data` as recipe YAML: the engine's spelling when valid, else as entered."""
    from compress_engine import EngineError, Recipe

    try:
        return Recipe.from_dict(data).to_yaml()
    except EngineError:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


# --- data split and image preprocessing (the recipe's evaluate section) -------------------


@dataclass(frozen=True)
class DataSplit:
    """The split fields as the recipe sets them, and what they make of the chosen dataset.

    The engine splits the shuffled samples (Dataset.split): `calibration_fraction` of them
    calibrate, `training_fraction` (when set) train prune/distill/finetune steps, the rest
    is the evaluation split. Without a training fraction, training uses the calibration part.
    """

    fraction: Any
    seed: Any
    training_fraction: Any = None
    calibration_samples: int | None = None
    training_samples: int | None = None  # None: training shares the calibration samples
    evaluation_samples: int | None = None
    image_note: str = ""


SPLIT_FIELDS = (
    ("calibration_fraction", "split-calibration_fraction", float),
    ("training_fraction", "split-training_fraction", float),
    ("seed", "split-seed", int),
)


def with_split(recipe_yaml: str, fields: Mapping[str, str]) -> str:
    """The recipe with evaluate.calibration_fraction, training_fraction and seed as typed in
    `fields` (form names, see SPLIT_FIELDS; an empty field drops the key, back to the
    default); out-of-range values are written too, so the recipe's own check says what is
    wrong."""
    data = _yaml_mapping(recipe_yaml)
    if data is None:
        return recipe_yaml  # unparsable: its error shows under the YAML
    evaluate = dict(data["evaluate"]) if isinstance(data.get("evaluate"), Mapping) else {}
    for key, name, kind in SPLIT_FIELDS:
        text = (fields.get(name) or "").strip()
        if not text:
            evaluate.pop(key, None)
            continue
        try:
            evaluate[key] = kind(text)
        except ValueError:
            evaluate[key] = text
    data["evaluate"] = evaluate
    return _recipe_text(data)


def _image_layout(version: ModelVersion) -> Any:
    """compress_engine.images.ImageLayout of the version's one image input; EngineError
    (with the engine's message) when its inputs cannot take an image-folder dataset."""
    from compress_engine import EngineError
    from compress_engine.images import image_layout
    from compress_engine.inspect import TensorInfo

    if len(version.inputs) != 1:
        raise EngineError(
            f"An image-folder dataset feeds a one-input model; this one has "
            f"{len(version.inputs)} inputs. Use a .npz dataset with an array per input."
        )
    return image_layout(TensorInfo.model_validate(version.inputs[0]))


def with_dataset_preprocessing(recipe_yaml: str, dataset: Dataset, version: ModelVersion) -> str:
    """For an image-folder dataset, the recipe with the dataset's recorded mean/std (for the
    model's channel count) in evaluate.image_mean/image_std, unless the recipe already sets
    values other than the defaults."""
    from compress_engine import EngineError
    from compress_engine.configs import EvaluateConfig

    data = _yaml_mapping(recipe_yaml)
    if not dataset.is_image_folder or data is None:
        return recipe_yaml
    try:
        layout = _image_layout(version)
    except EngineError:
        return recipe_yaml  # _check reports it on the dataset field
    recorded = dataset.image_normalisation(layout.channels)
    evaluate = dict(data["evaluate"]) if isinstance(data.get("evaluate"), Mapping) else {}
    defaults = EvaluateConfig()
    unset = all(
        evaluate.get(key, getattr(defaults, key)) == getattr(defaults, key)
        for key in ("image_mean", "image_std")
    )
    if recorded is None or not unset:
        return recipe_yaml
    evaluate["image_mean"], evaluate["image_std"] = recorded
    data["evaluate"] = evaluate
    return _recipe_text(data)


def data_split(form: JobForm) -> DataSplit:
    from compress_engine import EngineError, Recipe
    from compress_engine.configs import EvaluateConfig
    from compress_engine.data import split_sizes

    try:
        ev = Recipe.parse(form.recipe_yaml).evaluate
    except EngineError:
        data = _yaml_mapping(form.recipe_yaml) or {}
        evaluate = data.get("evaluate") if isinstance(data.get("evaluate"), Mapping) else {}
        defaults = EvaluateConfig()
        return DataSplit(
            fraction=evaluate.get("calibration_fraction", defaults.calibration_fraction),
            training_fraction=evaluate.get("training_fraction"),
            seed=evaluate.get("seed", defaults.seed),
        )
    split = DataSplit(
        fraction=ev.calibration_fraction, training_fraction=ev.training_fraction, seed=ev.seed
    )
    dataset = form.dataset
    if dataset is None:
        return split
    if ev.training_fraction is None:
        calibration, rest = split_sizes(dataset.samples, [ev.calibration_fraction])
        training = None
    else:
        calibration, training, rest = split_sizes(
            dataset.samples, [ev.calibration_fraction, ev.training_fraction]
        )
    note = ""
    if dataset.is_image_folder:
        try:
            layout = _image_layout(form.version)
        except EngineError:
            layout = None
        if layout is not None:
            mode = "grayscale" if layout.channels == 1 else "RGB"
            note = (
                f"Images are converted to {mode}, resized to {layout.height}x{layout.width} "
                f"(bilinear), scaled to [0, 1], normalised with mean {ev.image_mean} and std "
                f"{ev.image_std} (evaluate.image_mean / image_std) and fed as "
                f"{layout.describe()}."
            )
    return replace(
        split,
        calibration_samples=calibration,
        training_samples=training,
        evaluation_samples=min(rest, ev.max_evaluation_samples),
        image_note=note,
    )


def _check(form: JobForm, user: User) -> JobForm:
    """Fill in every error the engine (and the platform's own checks) would raise."""
    from compress_engine import EngineError, Recipe

    number_steps(form.steps)
    validate_steps(form.steps)
    try:
        recipe = Recipe.parse(form.recipe_yaml)
    except EngineError as exc:
        form.recipe_error = str(exc)
        return form
    try:
        preflight_job(
            model_version=form.version,
            user=user,
            recipe=recipe.model_dump(mode="json"),
            dataset=form.dataset,
        )
    except JobRejected as exc:
        form.dataset_error = str(exc)
    if form.dataset is not None and form.dataset.is_image_folder and not form.dataset_error:
        try:
            _image_layout(form.version)
        except EngineError as exc:
            form.dataset_error = str(exc)
    return form


def initial_form(
    version: ModelVersion,
    user: User,
    *,
    recipe: Any = None,
    dataset: Dataset | None = None,
    preset: str = DEFAULT_PRESET,
) -> JobForm:
    """The form as a page first shows it: a preset, or a given recipe (duplicate-and-edit)."""
    from compress_engine import Recipe
    from compress_engine.presets import PRESETS

    chosen = None
    if recipe is None:
        chosen = PRESETS[preset]
        parsed = chosen.recipe()
    else:
        parsed = Recipe.parse(recipe)
    form = JobForm(
        version=version,
        recipe_yaml=parsed.to_yaml(),
        steps=steps_from_recipe(parsed),
        dataset=dataset,
        preset=chosen,
        datasets=list(version.project.datasets.all()),
    )
    return _check(form, user)


def form_from_post(version: ModelVersion, user: User, data: QueryDict) -> JobForm:
    """Apply one builder action to the posted form.

    action: `preset` (load the chosen preset), `add` (a step of `add-technique`), `remove-N`,
    `build` (a builder field changed: regenerate the YAML), `yaml` (the YAML changed: rebuild
    the builder from it when it parses), `split` (a data split field changed: write it to the
    YAML's evaluate section), `dataset` (another dataset chosen: as `yaml`, and an image-folder
    dataset's mean/std go into the YAML unless it sets its own).
    """
    from compress_engine import EngineError, Recipe
    from compress_engine.presets import PRESETS

    action = data.get("action", "yaml")
    recipe_yaml = data.get("recipe", "")
    steps = steps_from_post(data)
    preset = None
    if action == "split":
        recipe_yaml = with_split(recipe_yaml, data)
    if action == "preset" and data.get("preset") in PRESETS:
        preset = PRESETS[data["preset"]]
        parsed = preset.recipe()
        steps, recipe_yaml = steps_from_recipe(parsed), parsed.to_yaml()
    elif action in ("add", "build") or action.startswith("remove-"):
        if action == "add" and data.get("add-technique") in techniques():
            steps = insert_step(steps, data["add-technique"])
        elif action.startswith("remove-") and action[7:].isdigit():
            index = int(action[7:])
            steps = [s for i, s in enumerate(steps) if i != index]
        recipe_yaml = compose_yaml(steps, recipe_yaml)
    else:
        # Unparsable YAML: the builder keeps what it had; the YAML's error shows under it.
        with suppress(EngineError):
            steps = steps_from_recipe(Recipe.parse(recipe_yaml))
    dataset = None
    if data.get("dataset"):
        dataset = version.project.datasets.filter(uuid=_uuid_or_none(data["dataset"])).first()
    if action == "dataset" and dataset is not None:
        # A newly chosen image-folder dataset brings its recorded mean/std.
        recipe_yaml = with_dataset_preprocessing(recipe_yaml, dataset, version)
    form = JobForm(
        version=version,
        recipe_yaml=recipe_yaml,
        steps=steps,
        dataset=dataset,
        preset=preset,
        datasets=list(version.project.datasets.all()),
    )
    return _check(form, user)


def _uuid_or_none(text: str) -> str | None:
    import uuid

    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def job_form_context(user: User, version: ModelVersion, form: JobForm | None = None) -> dict:
    """Everything templates/jobs/inc/job_form.html needs, for any page that shows it."""
    from accounts.access import can_write

    # Candidate distillation teachers: the team's other versions with the same inputs.
    others = (
        ModelVersion.objects.filter(
            project__team=version.project.team, status=ModelVersion.Status.READY
        )
        .exclude(pk=version.pk)
        .select_related("project")[:200]
    )
    return {
        "job_form": form or initial_form(version, user),
        "teachers": [v for v in others if v.takes_same_inputs(version)][:50],
        "can_write": can_write(user, version.project.team),
    }
