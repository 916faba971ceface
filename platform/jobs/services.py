"""Job workflows: create and enqueue, cancel, retry; the checks before creating."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.http import HttpRequest

from accounts import audit
from accounts.access import require_delete
from accounts.models import User
from accounts.quotas import QuotaExceeded, check_job_start
from compress_engine import PRESETS, EngineError, Recipe, default_recipe, step_needs
from compress_engine.configs import DistillStep, step_kind
from jobs.models import Job, Reaped
from jobs.routing import choose_queue
from registry.access import projects_for
from registry.deletion import DeletionPlan, artifact_bytes, refuse_or_audit
from registry.models import Dataset, ModelVersion
from registry.services import RegistryRejected, require_ready
from web.queue import send_compression_job
from web.rejections import Rejected

log = logging.getLogger(__name__)


class JobRejected(Rejected):
    """A job that cannot be started; the message is shown to the user."""


# A blank recipe for a language model: the preset its job form starts from.
LLM_DEFAULT_PRESET = "llm-int4"


def parse_recipe(raw: Any, *, llm: bool = False) -> Recipe:
    """A recipe (a Recipe, a dict or YAML text; blank means the default: dynamic int8, or
    for a language model (`llm`) the llm-int4 preset) validated through the engine's schema."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return PRESETS[LLM_DEFAULT_PRESET].recipe() if llm else default_recipe()
    try:
        return Recipe.parse(raw)
    except EngineError as exc:
        raise JobRejected(str(exc)) from exc


def _data_refusal(recipe: Recipe, dataset: Dataset | None) -> str | None:
    """What the recipe needs from the dataset and does not get (the engine's rule,
    compress_engine.step_needs), said the way the job form can act on it."""
    needs = step_needs(recipe)
    if dataset is None:
        wanting = [n for n in needs if n.data is not None]
        if not wanting:
            return None
        kinds = {n.data for n in wanting if n.data is not None}
        titles = ", ".join(n.title for n in wanting)
        verb = "needs" if len(wanting) == 1 else "need"
        return (
            f"{titles} {verb} {' and '.join(sorted(kinds))} samples: choose a dataset (upload "
            "a .npz on the project page)."
        )
    if not dataset.has_labels and (needing := [n.title for n in needs if n.labels]):
        verb = "trains" if len(needing) == 1 else "train"
        return (
            f"{', '.join(needing)} {verb} on labels and the dataset {dataset.name!r} has none: "
            "choose a dataset with labels (`y` or `labels` in the .npz), or use distill, which "
            "works without them."
        )
    return None


def _model_refusal(recipe: Recipe, version: ModelVersion) -> str | None:
    """A recipe for the other kind of model: language-model modes on an ONNX graph, or ONNX
    steps on a language model (the engine refuses both; said here before anything queues)."""
    if version.is_llm and not recipe.is_llm:
        return (
            f"{version.name} v{version.version} is a language model: its recipe has one step, "
            "quantize with mode weight-only or llm-auto (e.g. the llm-int4, llm-int8 or "
            "llm-auto preset). The ONNX modes (dynamic-int8, static-int8, fp16, weight-int4, "
            "auto) and prune, distill and finetune work on single ONNX graphs."
        )
    if recipe.is_llm and not version.is_llm:
        return (
            "Quantize modes weight-only and llm-auto are for language models (uploaded as a "
            f"zipped Hugging Face folder or a GGUF file); {version.name} v{version.version} is "
            "an ONNX graph: use dynamic-int8, static-int8, fp16, weight-int4 or auto (e.g. the "
            "fast-int8 preset)."
        )
    return None


def _dataset_kind_refusal(version: ModelVersion, dataset: Dataset | None) -> str | None:
    """Text for language models, tensors (.npz, image folders) for ONNX graphs."""
    if dataset is None:
        return None
    if version.is_llm and not dataset.is_text:
        holds = "image folders" if dataset.is_image_folder else "arrays (.npz)"
        return (
            f"The dataset {dataset.name!r} holds {holds}; a language model "
            "calibrates and is measured on text: choose a text dataset (.txt or .jsonl), or "
            "none for the bundled prose."
        )
    if dataset.is_text and not version.is_llm:
        return (
            f"The dataset {dataset.name!r} is text, for language models; this model takes "
            "tensors: choose a .npz or image-folder dataset."
        )
    return None


def _resolve_teachers(recipe: Recipe, *, model_version: ModelVersion, user: User) -> Recipe:
    """Check each distill step's `teacher` and return the recipe with it in canonical form
    (a copy when a teacher is rewritten: the caller's recipe is left as it was).

    A teacher other than `original` must be the id of a model version of the job's team that
    the user can read; anything else (a typo, another team's model) is refused the same way,
    so the message reveals nothing about other teams.
    """
    if not any(
        isinstance(s, DistillStep) and s.distill.teacher != "original" for s in recipe.steps
    ):
        return recipe
    recipe = recipe.model_copy(deep=True)
    for step in recipe.steps:
        if not isinstance(step, DistillStep) or step.distill.teacher == "original":
            continue
        raw = step.distill.teacher.strip()
        refusal = JobRejected(
            f"distill.teacher {raw!r} is not a model you can use: write `original` or the id of "
            "another model version in this team (listed under the recipe editor)."
        )
        try:
            teacher_uuid = uuid.UUID(raw)
        except ValueError:
            raise refusal from None
        teacher = ModelVersion.objects.filter(
            project__in=projects_for(user),
            project__team_id=model_version.project.team_id,
            uuid=teacher_uuid,
            status=ModelVersion.Status.READY,
        ).first()
        if teacher is None:
            raise refusal
        if not teacher.takes_same_inputs(model_version):
            raise JobRejected(
                f"The teacher {teacher} takes other inputs than this model ("
                f"{_inputs_text(teacher)} vs {_inputs_text(model_version)}); distillation feeds "
                "both the same samples."
            )
        # The runner hands the engine teachers keyed by this exact text.
        step.distill.teacher = str(teacher.uuid)
    return recipe


def _inputs_text(version: ModelVersion) -> str:
    return ", ".join(f"{t['name']} {t.get('shape', [])}" for t in version.inputs)


def teacher_uuids(recipe: Recipe) -> list[str]:
    """Model version ids that a recipe's distill steps learn from (in order, no repeats)."""
    names = [s.distill.teacher for s in recipe.steps if isinstance(s, DistillStep)]
    return list(dict.fromkeys(n for n in names if n != "original"))


def create_job(
    *,
    model_version: ModelVersion,
    user: User,
    recipe: Any,
    dataset: Dataset | None = None,
    request: HttpRequest | None = None,
) -> Job:
    """Create a queued job and enqueue it, on the queue its recipe calls for (jobs.routing),
    once the row is committed. `recipe` is a Recipe, or a dict or YAML text to parse."""
    checked = preflight_job(model_version=model_version, user=user, recipe=recipe, dataset=dataset)
    task_id = str(uuid.uuid4())
    queue = choose_queue(checked)
    team = model_version.project.team
    with transaction.atomic():
        # The team row lock serialises starts, so two at once cannot both pass the limit.
        type(team).objects.select_for_update().get(pk=team.pk)
        _check_still_there(model_version, dataset)
        _check_quota(team)
        job = Job.objects.create(
            team=model_version.project.team,
            project=model_version.project,
            model_version=model_version,
            recipe=checked.model_dump(mode="json"),
            dataset=dataset,
            created_by=user,
            celery_task_id=task_id,
            queue=queue,
            stage="Waiting for a worker",
        )

        transaction.on_commit(lambda: _enqueue(job, "Could not reach the job queue"))
        audit.record(
            team=team,
            actor=user,
            action=audit.Action.STARTED_JOB,
            target=job,
            detail={"model_version": str(model_version.uuid), "steps": _step_names(checked)},
            request=request,
        )
    log.info("job %s created", job.uuid, extra=_log_extra(job))
    return job


def _check_still_there(model_version: ModelVersion, dataset: Dataset | None) -> None:
    """Under the team lock: a deletion (registry.deletion) that committed since the checks
    leaves nothing to run on."""
    if not ModelVersion.objects.filter(pk=model_version.pk).exists():
        raise JobRejected(f"{model_version} was deleted; the job was not started.")
    if dataset is not None and not Dataset.objects.filter(pk=dataset.pk).exists():
        raise JobRejected(f"The dataset {dataset.name!r} was deleted; the job was not started.")


def _enqueue(job: Job, failure: str) -> None:
    """Send a queued job's task (its celery_task_id, on its queue); if the broker cannot be
    reached, fail the job with `failure` and the reason instead of leaving it queued."""
    try:
        send_compression_job(job)
    except Exception as exc:
        log.exception("could not enqueue job %s", job.uuid, extra=_log_extra(job))
        job.fail(f"{failure}: {exc}. Try again later.")


def reap_stale_jobs(older_than: timedelta) -> Reaped:
    """The reaper, run by every worker's heartbeat thread: running jobs whose heartbeat is
    older than `older_than` are re-queued once (sent again, on the queue routing picks now:
    the GPU worker that ran one may be the one that died), then failed (Job.reap_stale)."""
    reaped = Job.reap_stale(older_than)
    for job in reaped.requeued:
        job.celery_task_id, job.queue = str(uuid.uuid4()), choose_queue(job.recipe_obj)
        Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
            celery_task_id=job.celery_task_id, queue=job.queue
        )
        log.warning(
            "job %s re-queued on %s: its worker was lost (run %d of %d)",
            job.uuid,
            job.queue,
            job.attempts + 1,
            Job.MAX_ATTEMPTS,
            extra=_log_extra(job),
        )
        _enqueue(job, "Worker lost, and the job could not be re-queued")
    return reaped


def _log_extra(job: Job) -> dict[str, str]:
    # The web side is outside any job's log context (config.log_context): say which job.
    return {"job_id": str(job.uuid)}


def _check_quota(team: Any) -> None:
    try:
        check_job_start(team)
    except QuotaExceeded as exc:
        # Too many jobs at once: try again once a job has finished.
        raise JobRejected(str(exc), status=429) from exc


def _step_names(recipe: Recipe) -> list[str]:
    return [step_kind(step) for step in recipe.steps]


def cancel_job(job: Job, *, user: User, request: HttpRequest | None = None) -> bool:
    """Cancel a queued job, or ask its worker to stop a running one; False if it had ended."""
    with transaction.atomic():
        cancelled = job.cancel()
        if cancelled:
            audit.record(
                team=job.team,
                actor=user,
                action=audit.Action.CANCELLED_JOB,
                target=job,
                request=request,
            )
    if cancelled:
        log.info("job %s cancel requested (%s)", job.uuid, job.status, extra=_log_extra(job))
    return cancelled


def plan_job_deletion(job: Job) -> DeletionPlan:
    """What deleting a job frees; refused while it is queued or running (its worker would
    write artifacts for a row that no longer exists)."""
    from jobs.titles import job_title

    refusal = None
    if not job.is_terminal:
        refusal = (
            f"The job is still {job.get_status_display().lower()}: cancel it or wait for it "
            "to end, then delete it."
        )
    return DeletionPlan(
        kind="job",
        name=job_title(job),
        freed_bytes=artifact_bytes(Job.objects.filter(pk=job.pk)),
        also=["Its report and compressed files (download links to them stop working)."],
        refusal=refusal,
    )


def delete_job(job: Job, *, user: User, request: HttpRequest | None = None) -> DeletionPlan:
    """Delete a finished job; its artifact folder is removed once this commits
    (registry.stored_files). Owners and admins only."""
    require_delete(user, job.team)
    with transaction.atomic():
        job = Job.objects.select_for_update().select_related("model_version", "team").get(pk=job.pk)
        plan = plan_job_deletion(job)
        refuse_or_audit(plan, team=job.team, target=job, user=user, request=request)
        job.delete()
    log.info("job %s deleted by %s", job.uuid, user.get_username(), extra=_log_extra(job))
    return plan


def record_download(
    *, job: Job, filename: str, target: Any, user: User, request: HttpRequest | None = None
) -> None:
    """Log a download of a job's file (artifact, bundle, report) in the team's audit log; the
    web views and the API both call it."""
    audit.record(
        team=job.team,
        actor=user,
        action=audit.Action.DOWNLOADED,
        target=target,
        detail={"file": filename, "job": str(job.uuid)},
        request=request,
    )


def preflight_job(
    *, model_version: ModelVersion, user: User, recipe: Any, dataset: Dataset | None = None
) -> Recipe:
    """The checks create_job makes before it queues anything, without creating a job: the
    job form runs them as the user edits, so a refusal shows before submission. Returns the
    recipe as create_job would store it; raises JobRejected with the same message."""
    try:
        require_ready(model_version)
    except RegistryRejected as exc:
        raise JobRejected(str(exc)) from exc
    parsed = parse_recipe(recipe, llm=model_version.is_llm)
    if dataset is not None and dataset.project_id != model_version.project_id:
        raise JobRejected("The dataset belongs to another project.")
    if refusal := _model_refusal(parsed, model_version) or _dataset_kind_refusal(
        model_version, dataset
    ):
        raise JobRejected(refusal)
    if refusal := _data_refusal(parsed, dataset):
        raise JobRejected(refusal)
    _check_quota(model_version.project.team)
    return _resolve_teachers(parsed, model_version=model_version, user=user)


def retry_job(job: Job, *, user: User, request: HttpRequest | None = None) -> Job:
    """A new job with the same recipe, model version and dataset (checked again as new)."""
    if not job.is_terminal:
        raise JobRejected("The job is still running; cancel it first or wait for it to end.")
    return create_job(
        model_version=job.model_version,
        user=user,
        recipe=job.recipe_obj,
        dataset=job.dataset,
        request=request,
    )
