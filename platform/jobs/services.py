"""Job workflows: create and enqueue, cancel."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction

from accounts.models import User
from jobs.models import Job
from registry.models import Dataset, ModelVersion

log = logging.getLogger(__name__)


class JobRejected(Exception):
    """A job that cannot be started; the message is shown to the user."""


def parse_recipe(raw: Any) -> dict[str, Any]:
    """Validate a recipe (dict or YAML text; blank means the default) through the engine's
    schema and return it as JSON."""
    from compress_engine import EngineError, Recipe
    from compress_engine.configs import default_recipe

    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default_recipe().model_dump(mode="json")
    try:
        recipe = Recipe.parse(raw)
    except EngineError as exc:
        raise JobRejected(str(exc)) from exc
    return recipe.model_dump(mode="json")


def techniques_needing_data(recipe_json: dict[str, Any]) -> list[str]:
    """Titles of the recipe's steps that cannot run without calibration/training samples."""
    from compress_engine import Recipe
    from compress_engine.passes import pass_for_step

    recipe = Recipe.parse(recipe_json)
    return [p.info.title for p in map(pass_for_step, recipe.steps) if p.info.needs_data]


def create_job(
    *, model_version: ModelVersion, user: User, recipe: Any, dataset: Dataset | None = None
) -> Job:
    """Create a queued job and enqueue it once the row is committed."""
    from jobrunner.tasks import run_compression_job

    recipe_json = parse_recipe(recipe)
    if dataset is not None and dataset.project_id != model_version.project_id:
        raise JobRejected("The dataset belongs to another project.")
    if dataset is None and (needing := techniques_needing_data(recipe_json)):
        raise JobRejected(
            f"{', '.join(needing)} needs calibration samples: choose a dataset (upload a .npz "
            "on the project page)."
        )
    task_id = str(uuid.uuid4())
    with transaction.atomic():
        job = Job.objects.create(
            team=model_version.project.team,
            project=model_version.project,
            model_version=model_version,
            recipe=recipe_json,
            dataset=dataset,
            created_by=user,
            celery_task_id=task_id,
            stage="Waiting for a worker",
        )

        def enqueue() -> None:
            try:
                run_compression_job.apply_async(args=[str(job.uuid)], task_id=task_id)
            except Exception as exc:  # broker down: say so on the job instead of leaving it queued
                log.exception("could not enqueue job %s", job.uuid)
                job.fail(f"Could not reach the job queue: {exc}. Try again later.")

        transaction.on_commit(enqueue)
    return job


def cancel_job(job: Job) -> bool:
    return job.cancel()
