"""What this engine can do and what a recipe will need, listable without torch or onnxruntime.

The web form, the job routing and the live job page read these rules here, so each is
written once: the techniques in recipe order, which steps need data or labels, which ones
train (and want a GPU), the user messages for missing data, and the stages a run goes
through as slices of the engine's own progress (0..1, compress_engine.stages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

from pydantic import BaseModel

from compress_engine import stages
from compress_engine.configs import (
    QUANTIZE_CONFIGS,
    QUANTIZE_MODES,
    TORCH_STEP_KINDS,
    DistillStep,
    FinetuneStep,
    PruneConfig,
    PruneStep,
    Recipe,
    step_kind,
)
from compress_engine.passes import list_passes, pass_for_step


@dataclass(frozen=True)
class Technique:
    """One step kind (and, for quantize, one mode) this engine implements."""

    key: str  # "prune", "distill", "finetune", "quantize:static-int8", ...
    step: str  # the recipe step key
    mode: str | None  # quantize only
    title: str
    description: str
    needs_data: bool
    needs_labels: bool
    compute: Literal["light", "heavy"]  # 'heavy' wants a GPU worker
    config: type[BaseModel]  # the step's settings model


@cache
def techniques() -> tuple[Technique, ...]:
    """Every technique, in the order steps may follow each other in a recipe: the torch-side
    steps (prune, distill, finetune) first, then the quantize modes."""
    infos = {(p.step, p.mode): p for p in list_passes()}
    step_models: dict[str, type[BaseModel]] = {
        "prune": PruneStep,
        "distill": DistillStep,
        "finetune": FinetuneStep,
    }
    configs: list[tuple[str, str | None, type[BaseModel]]] = [
        (kind, None, step_models[kind].model_fields[kind].annotation)  # type: ignore[misc]
        for kind in TORCH_STEP_KINDS
    ]
    configs += [("quantize", m, c) for m, c in zip(QUANTIZE_MODES, QUANTIZE_CONFIGS, strict=True)]
    out = []
    for kind, mode, config in configs:
        info = infos.get((kind, mode))
        if info is None:  # a schema entry this engine version has no pass for
            continue
        out.append(
            Technique(
                key=f"{kind}:{mode}" if mode else kind,
                step=kind,
                mode=mode,
                title=info.title,
                description=info.description,
                needs_data=info.needs_data,
                needs_labels=info.needs_labels,
                compute=info.compute,
                config=config,
            )
        )
    return tuple(out)


def technique_key(step: BaseModel) -> str:
    """The Technique.key of one recipe step ("prune", "quantize:fp16", ...)."""
    kind = step_kind(step)
    mode = getattr(getattr(step, kind), "mode", None) if kind == "quantize" else None
    return f"{kind}:{mode}" if mode else kind


def insert_position(kinds: Sequence[str], kind: str) -> int:
    """Where a new step of `kind` goes among steps of `kinds`: the torch-side steps before
    the quantize step (Recipe refuses them after it), anything else last."""
    if kind in TORCH_STEP_KINDS:
        return next((i for i, k in enumerate(kinds) if k == "quantize"), len(kinds))
    return len(kinds)


# --- what a recipe needs ----------------------------------------------------------------


@dataclass(frozen=True)
class StepNeeds:
    """What one step of a recipe, as configured, needs and does."""

    title: str
    step: str
    data: Literal["calibration", "training"] | None  # the samples it needs, if any
    labels: bool  # trains on the dataset's labels
    trains: bool  # trains for epochs: the GPU pays off (job routing)


def step_needs(recipe: Recipe) -> list[StepNeeds]:
    """One entry per step of `recipe`, in order."""
    out = []
    for step in recipe.steps:
        technique = pass_for_step(step)
        info = technique.info
        out.append(
            StepNeeds(
                title=info.title,
                step=info.step,
                data=(
                    ("calibration" if info.step == "quantize" else "training")
                    if technique.needs_data()
                    else None
                ),
                labels=technique.needs_labels(),
                trains=info.compute == "heavy" and _trains_as_configured(getattr(step, info.step)),
            )
        )
    return out


def _trains_as_configured(config: BaseModel) -> bool:
    # Of the heavy passes, pruning trains only when it recovers between iterations (it
    # distils between pruning steps); one-shot and taylor pruning backpropagate a few
    # batches at most, which a CPU does fine.
    if isinstance(config, PruneConfig):
        return config.method == "channel" and config.iterations > 1 and config.recover_epochs > 0
    return True


def training_steps(recipe: Recipe) -> list[str]:
    """Kinds of the recipe's steps that train a model for epochs ('distill', 'prune', ...):
    the steps for which a job goes to a GPU worker when one is up."""
    return [needs.step for needs in step_needs(recipe) if needs.trains]


def missing_data(recipe: Recipe, *, has_data: bool, has_labels: bool) -> str | None:
    """The message compress() refuses `recipe` with when the dataset is missing (or has no
    labels where a step trains on them); None when the data is enough."""
    for needs in step_needs(recipe):
        if not has_data and needs.data is not None:
            return (
                f"{needs.title} needs {needs.data} data: give a dataset (.npz with arrays "
                "named after the model inputs, or `x`), or pick a step that needs none, "
                "e.g. quantize with mode dynamic-int8."
            )
    if not has_data:
        return None
    for needs in step_needs(recipe):
        if not has_labels and needs.labels:
            return (
                f"{needs.title} trains on labels and this dataset has none "
                "(add `y` or `labels` to the .npz)."
            )
    return None


# --- the stages of a run ----------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str
    lo: float  # fraction of the engine's progress where the stage starts
    hi: float  # ... and ends


def progress_layout(recipe: Recipe | None) -> stages.Layout:
    """Where each stage of a run of `recipe` sits in its progress: steps that train get
    most of it. None (a recipe that no longer parses) lays out one step that does not."""
    return stages.layout([] if recipe is None else [n.trains for n in step_needs(recipe)])


def stage_plan(recipe: Recipe | None) -> tuple[Stage, ...]:
    """The stages compress() goes through for `recipe`, as the slices of its progress it
    reports them in; None (a recipe that no longer parses) plans one generic step."""
    if recipe is not None and recipe.is_llm:
        # A language model's run has stages of its own (compress_engine.llm.pipeline).
        from compress_engine.llm.stage_plan import llm_stages

        return tuple(Stage(name, lo, hi) for name, lo, hi in llm_stages(recipe))
    # One pass over the steps gives both the titles and what the layout weighs (training).
    needs = [] if recipe is None else step_needs(recipe)
    titles = [n.title for n in needs] or ["Compression"]
    tflite = recipe is not None and "tflite" in recipe.export
    at = stages.layout([n.trains for n in needs])
    return (
        Stage("Measuring the original model", at.measure_original, at.steps[0][0]),
        *(
            Stage(f"Step {i + 1}: {title}", lo, hi)
            for i, (title, (lo, hi)) in enumerate(zip(titles, at.steps, strict=True))
        ),
        Stage("Validating the result", at.validate, at.measure_result),
        Stage("Measuring the compressed model", at.measure_result, at.export),
        Stage(
            "Checking artifacts" + (" and converting to TFLite" if tflite else ""),
            at.export,
            at.write,
        ),
        Stage("Writing the report", at.write, 1.0),
    )
