"""The job form: what it shows (the step builder, the recipe YAML, the dataset and its
split, every error the engine would raise) and how each builder action changes it.

The YAML is the one source the job is created from (jobs.recipe_yaml); the builder rows
(jobs.recipe_builder) only regenerate its `steps`. Each request parses the recipe once: the
form carries the parsed Recipe to the checks and the split it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from django.http import QueryDict

from accounts.models import User
from compress_engine import (
    PRESETS,
    EngineError,
    ImageLayout,
    Preset,
    PresetSuggestion,
    TensorInfo,
    image_layout,
    matching_preset,
    split_sizes,
    suggest_preset,
)
from compress_engine.configs import EvaluateConfig, Recipe
from jobs.llm_form import (
    TextUse,
    is_llm_technique,
    llm_fields,
    text_use,
    usable_datasets,
    with_llm_settings,
)
from jobs.recipe_builder import (
    BuilderField,
    BuilderStep,
    Technique,
    insert_step,
    number_steps,
    steps_from_post,
    steps_from_recipe,
    techniques,
    validate_steps,
)
from jobs.recipe_yaml import (
    RecipeText,
    evaluate_section,
    read_recipe,
    recipe_text,
    with_evaluate,
    with_normalisation,
    with_preset,
    with_split,
    with_steps,
)
from jobs.services import JobRejected, preflight_job
from registry.models import Dataset, ModelVersion
from registry.preprocessing import Preprocessing, model_image_layout


@dataclass
class JobForm:
    """What the job form shows: the builder, the YAML, the dataset and what is wrong. A
    language model's form offers only the language-model presets, modes and text datasets;
    an ONNX graph's form none of them."""

    version: ModelVersion
    recipe_yaml: str
    recipe: Recipe | None  # recipe_yaml parsed; None when it does not parse
    steps: list[BuilderStep]
    dataset: Dataset | None = None
    preset: Preset | None = None  # the preset the recipe's steps and exports match
    recipe_error: str = ""  # the YAML as a whole (parse errors, step order, budgets)
    dataset_error: str = ""  # what the recipe needs from the dataset, or teachers
    datasets: list[Dataset] = field(default_factory=list)

    @classmethod
    def of(cls, version: ModelVersion, text: RecipeText, **fields: Any) -> JobForm:
        """The form for this recipe text. The preset shown is read off the recipe itself, so
        whatever order preset, dataset and normalisation were chosen in, the same recipe
        shows the same preset."""
        return cls(
            version=version,
            recipe_yaml=text.yaml,
            recipe=text.recipe,
            recipe_error=text.error,
            datasets=usable_datasets(version),
            preset=matching_preset(text.recipe) if text.recipe is not None else None,
            **fields,
        )

    @property
    def suggestion(self) -> PresetSuggestion:
        """The preset the engine suggests for this model (compress_engine.suggest_preset):
        a hint beside the preset; it changes no choice."""
        return suggest_preset(
            self.version.op_types or {}, self.dataset is not None, llm=self.is_llm
        )

    @property
    def is_llm(self) -> bool:
        return self.version.is_llm

    @property
    def normalisation(self) -> Normalisation | None:
        return normalisation(self)

    @property
    def can_submit(self) -> bool:
        return not (
            self.recipe_error or self.dataset_error or any(s.has_errors for s in self.steps)
        )

    @property
    def presets(self) -> list[Preset]:
        return [p for p in PRESETS.values() if p.llm == self.is_llm]

    @property
    def techniques(self) -> list[Technique]:
        return [t for t in techniques().values() if is_llm_technique(t.mode) == self.is_llm]

    @property
    def can_add_step(self) -> bool:
        """A language model's recipe is one step: its technique is switched, not added to."""
        return not (self.is_llm and self.steps)

    @property
    def llm_fields(self) -> list[BuilderField]:
        """A language model's measurement settings (evaluate.llm) as fields."""
        return llm_fields(self.recipe, self.recipe_yaml) if self.is_llm else []

    @property
    def text_use(self) -> TextUse | None:
        return text_use(self.recipe, self.dataset) if self.is_llm else None

    @property
    def split(self) -> DataSplit:
        return data_split(self)


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


def _image_layout(version: ModelVersion) -> ImageLayout:
    """The layout of the version's one image input; EngineError (with the engine's message)
    when its inputs cannot take an image-folder dataset."""
    if len(version.inputs) != 1:
        raise EngineError(
            f"An image-folder dataset feeds a one-input model; this one has "
            f"{len(version.inputs)} inputs. Use a .npz dataset with an array per input."
        )
    return image_layout(TensorInfo.model_validate(version.inputs[0]))


@dataclass(frozen=True)
class Normalisation:
    """The image normalisation the recipe sets (evaluate.image_mean/image_std), shown on the
    form for models with an image input, and where it comes from."""

    mean: list[float]
    std: list[float]
    layout: ImageLayout
    model_default: Preprocessing  # the model version's recorded preprocessing

    @property
    def is_none(self) -> bool:
        return self.mean == [0.0] and self.std == [1.0]

    @property
    def is_model_default(self) -> bool:
        return {"image_mean": self.mean, "image_std": self.std} == (
            self.model_default.recipe_values()
        )

    @property
    def mean_text(self) -> str:
        return ", ".join(f"{v:g}" for v in self.mean)

    @property
    def std_text(self) -> str:
        return ", ".join(f"{v:g}" for v in self.std)


def normalisation(form: JobForm) -> Normalisation | None:
    """None for models without one image input (image-folder datasets do not fit them)."""
    layout = model_image_layout(form.version)
    if layout is None:
        return None
    if form.recipe is not None:
        mean, std = list(form.recipe.evaluate.image_mean), list(form.recipe.evaluate.image_std)
    else:
        evaluate, defaults = evaluate_section(form.recipe_yaml), EvaluateConfig()
        mean = evaluate.get("image_mean", defaults.image_mean)
        std = evaluate.get("image_std", defaults.image_std)
    return Normalisation(mean, std, layout, Preprocessing.of(form.version))


def model_defaults(text: RecipeText, version: ModelVersion) -> RecipeText:
    """A new recipe with the model version's recorded preprocessing (none when unset)."""
    chosen = Preprocessing.of(version)
    if chosen.is_none or model_image_layout(version) is None:
        return text
    return with_evaluate(text.yaml, chosen.recipe_values())


def data_split(form: JobForm) -> DataSplit:
    if form.recipe is None:
        evaluate = evaluate_section(form.recipe_yaml)
        defaults = EvaluateConfig()
        return DataSplit(
            fraction=evaluate.get("calibration_fraction", defaults.calibration_fraction),
            training_fraction=evaluate.get("training_fraction"),
            seed=evaluate.get("seed", defaults.seed),
        )
    ev = form.recipe.evaluate
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
    number_steps(form.steps)
    validate_steps(form.steps)
    if form.recipe is None:
        return form  # recipe_error says why
    try:
        preflight_job(
            model_version=form.version, user=user, recipe=form.recipe, dataset=form.dataset
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
    recipe: Recipe | None = None,
    dataset: Dataset | None = None,
) -> JobForm:
    """The form as a page first shows it: a given recipe (duplicate-and-edit), or the preset
    the engine suggests for this model with the model's own preprocessing. A suggestion that
    calibrates or trains starts on the project's newest dataset."""
    if recipe is None:
        usable = usable_datasets(version)
        newest = dataset or (usable[0] if usable else None)
        llm = version.is_llm
        suggestion = suggest_preset(version.op_types or {}, newest is not None, llm=llm)
        # A language model calibrates on the project's newest text when there is some (the
        # bundled prose otherwise).
        if suggestion.preset.needs_data or llm:
            dataset = newest
        text = model_defaults(recipe_text(suggestion.preset.recipe()), version)
    else:
        text = recipe_text(recipe)
    form = JobForm.of(version, text, steps=steps_from_recipe(text.recipe), dataset=dataset)
    return _check(form, user)


def form_from_post(version: ModelVersion, user: User, data: QueryDict) -> JobForm:
    """Apply one builder action to the posted form.

    action: `preset` (load the chosen preset), `add` (a step of `add-technique`), `remove-N`,
    `build` (a builder field changed: regenerate the YAML), `yaml` (the YAML changed: rebuild
    the builder from it when it parses), `split` (a data split field changed: write it to the
    YAML's evaluate section), `normalisation` (the image mean/std changed: likewise),
    `dataset` (another dataset chosen: as `yaml`; the recipe does not change), `llm` (a
    language model's measurement setting changed: written to the YAML's evaluate.llm).

    A preset replaces the steps, exports and evaluate settings but keeps the split and the
    normalisation chosen on the form, and nothing else rewrites them: the same choices give
    the same recipe in whatever order they are made.
    """
    action = data.get("action", "yaml")
    posted = data.get("recipe", "")
    steps = steps_from_post(data)
    dataset = None
    if data.get("dataset"):
        dataset = version.project.datasets.filter(uuid=_uuid_or_none(data["dataset"])).first()
    if action == "preset" and data.get("preset") in PRESETS:
        text = with_preset(posted, PRESETS[data["preset"]].recipe())
        if text.recipe is not None:
            steps = steps_from_recipe(text.recipe)
    elif action in ("add", "build") or action.startswith("remove-"):
        if action == "add" and data.get("add-technique") in techniques():
            steps = insert_step(steps, data["add-technique"])
        elif action.startswith("remove-") and action[7:].isdigit():
            index = int(action[7:])
            steps = [s for i, s in enumerate(steps) if i != index]
        text = with_steps(posted, [s.as_step() for s in steps])
    else:
        if action == "split":
            text = with_split(posted, data)
        elif action == "normalisation":
            text = with_normalisation(posted, data)
        elif action == "llm":
            text = with_llm_settings(posted, data)
        else:
            text = read_recipe(posted)
        # Unparsable YAML: the builder keeps what it had; the YAML's error shows under it.
        if text.recipe is not None:
            steps = steps_from_recipe(text.recipe)
    form = JobForm.of(version, text, steps=steps, dataset=dataset)
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

    return {
        "job_form": form or initial_form(version, user),
        "teachers": _teachers(version),
        "can_write": can_write(user, version.project.team),
    }


def _teachers(version: ModelVersion) -> list[ModelVersion]:
    """Candidate distillation teachers: the team's other versions with the same inputs (none
    for a language model, which has no distill step)."""
    if version.is_llm:
        return []
    others = (
        ModelVersion.objects.filter(
            project__team=version.project.team, status=ModelVersion.Status.READY
        )
        .exclude(pk=version.pk)
        .select_related("project")[:200]
    )
    return [v for v in others if v.takes_same_inputs(version)][:50]
