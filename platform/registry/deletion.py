"""Deleting projects, model versions and datasets.

Owners and admins only (accounts.access.require_delete). Never while a queued or running job
uses the object (as its model, its dataset, or a distillation teacher): the worker would
write artifacts for rows that no longer exist, so the refusal says to cancel or wait. The
finished jobs that used the object go with it, and the deletion is logged in the team's
audit log. The stored files (models, uploaded sources, datasets, every job's artifact folder)
are removed once the deletion commits, by registry.stored_files.

A model version still converting may be deleted: the conversion worker finds the row gone
and removes what it stored (jobrunner.ingest), and a conversion that never ends would
otherwise keep the version forever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import QuerySet, Sum
from django.http import HttpRequest

from accounts import audit
from accounts.access import require_delete
from accounts.models import Team, User
from accounts.quotas import human_size
from jobs.models import Artifact, Job
from registry.models import Dataset, ModelVersion, Project
from web.rejections import Rejected

log = logging.getLogger(__name__)

ACTIVE = (Job.Status.QUEUED, Job.Status.RUNNING)


class DeletionRefused(Rejected):
    """Jobs still queued or running use what was to be deleted (409: try again later)."""

    status = 409


@dataclass(frozen=True)
class DeletionPlan:
    """What deleting an object takes with it, for the confirm page and the audit log."""

    kind: str  # "project", "model version", "dataset", "job"
    name: str
    finished_jobs: int = 0
    freed_bytes: int = 0
    also: list[str] = field(default_factory=list)  # sentences: what else goes
    refusal: str | None = None

    @property
    def freed(self) -> str:
        return human_size(self.freed_bytes)

    def done_message(self) -> str:
        jobs = f" and {_jobs_text(self.finished_jobs)}" if self.finished_jobs else ""
        return f"Deleted the {self.kind} “{self.name}”{jobs}; {self.freed} freed."

    def audit_detail(self) -> dict[str, object]:
        return {"kind": self.kind, "jobs": self.finished_jobs, "bytes": self.freed_bytes}


def _jobs_text(count: int) -> str:
    return f"{count} finished job{'s' if count != 1 else ''}"


def artifact_bytes(jobs: QuerySet[Job]) -> int:
    total = Artifact.objects.filter(job__in=jobs).aggregate(n=Sum("size_bytes"))["n"]
    return int(total or 0)


def _versions_bytes(versions: QuerySet[ModelVersion]) -> int:
    sums = versions.aggregate(a=Sum("size_bytes"), b=Sum("source_size_bytes"))
    return int((sums["a"] or 0) + (sums["b"] or 0))


def _teaching(team: Team, versions: QuerySet[ModelVersion], jobs: QuerySet[Job]) -> int:
    """Active jobs of the team, other than `jobs`, that learn from one of `versions`."""
    from compress_engine import EngineError
    from jobs.services import teacher_uuids

    wanted = {str(u) for u in versions.values_list("uuid", flat=True)}
    if not wanted:
        return 0
    count = 0
    others = Job.objects.filter(team=team, status__in=ACTIVE).exclude(pk__in=jobs.values("pk"))
    for job in others.only("recipe"):
        try:
            teachers = teacher_uuids(job.recipe_obj)
        except EngineError:  # a recipe this engine no longer reads runs nothing
            continue
        count += bool(wanted.intersection(teachers))
    return count


def _busy(subject: str, using: int, teaching: int) -> str | None:
    """The refusal while jobs use the object, or None."""
    total = using + teaching
    if not total:
        return None
    uses = []
    if using:
        uses.append(f"{using} queued or running job{'s' if using != 1 else ''}")
    if teaching:
        uses.append(
            f"{teaching} queued or running job{'s' if teaching != 1 else ''} as a distillation "
            "teacher"
        )
    them = "that job ends: cancel it" if total == 1 else "those jobs end: cancel them"
    return f"{subject} is in use by {' and by '.join(uses)}. It can be deleted once {them} or wait."


def _plan(
    *,
    kind: str,
    name: str,
    team: Team,
    jobs: QuerySet[Job],
    versions: QuerySet[ModelVersion],
    own_bytes: int,
    also: list[str],
    jobs_of: str = "that used it",
) -> DeletionPlan:
    """The plan for an object whose deletion takes `jobs` and `versions` with it."""
    finished = jobs.exclude(status__in=ACTIVE).count()
    if finished:
        reports = "its report" if finished == 1 else "their reports"
        also = [*also, f"{_jobs_text(finished)} {jobs_of}, with {reports} and files."]
    return DeletionPlan(
        kind=kind,
        name=name,
        finished_jobs=finished,
        freed_bytes=own_bytes + artifact_bytes(jobs),
        also=also,
        refusal=_busy(
            f"The {kind} “{name}”",
            jobs.filter(status__in=ACTIVE).count(),
            _teaching(team, versions, jobs),
        ),
    )


def plan_project_deletion(project: Project) -> DeletionPlan:
    versions = project.model_versions.all()
    datasets = project.datasets.all()
    also = []
    if count := versions.count():
        also.append(f"{count} model version{'s' if count != 1 else ''} and their files.")
    if count := datasets.count():
        also.append(f"{count} dataset{'s' if count != 1 else ''}.")
    dataset_bytes = datasets.aggregate(n=Sum("size_bytes"))["n"] or 0
    return _plan(
        kind="project",
        name=project.name,
        team=project.team,
        jobs=Job.objects.filter(project=project),
        versions=versions,
        own_bytes=_versions_bytes(versions) + int(dataset_bytes),
        also=also,
        jobs_of="in it",
    )


def plan_model_version_deletion(version: ModelVersion) -> DeletionPlan:
    versions = ModelVersion.objects.filter(pk=version.pk)
    also = ["The uploaded file it was converted from."] if version.source_file else []
    return _plan(
        kind="model version",
        name=str(version),
        team=version.project.team,
        jobs=Job.objects.filter(model_version=version),
        versions=versions,
        own_bytes=_versions_bytes(versions),
        also=also,
    )


def plan_dataset_deletion(dataset: Dataset) -> DeletionPlan:
    return _plan(
        kind="dataset",
        name=dataset.name,
        team=dataset.project.team,
        jobs=Job.objects.filter(dataset=dataset),
        versions=ModelVersion.objects.none(),
        own_bytes=dataset.size_bytes,
        also=[],
    )


def refuse_or_audit(
    plan: DeletionPlan,
    *,
    team: Team,
    target: Project | ModelVersion | Dataset | Job,
    user: User,
    request: HttpRequest | None,
) -> None:
    """Inside the deleting transaction: refuse with the plan's reason, else record the
    deletion in the team's audit log (one entry, with what goes and the bytes freed)."""
    if plan.refusal:
        raise DeletionRefused(plan.refusal)
    audit.record(
        team=team,
        actor=user,
        action=audit.Action.DELETED,
        target=target,
        detail=plan.audit_detail(),
        request=request,
    )


def _delete(
    *,
    team: Team,
    target: Project | ModelVersion | Dataset,
    plan_for: Callable[[], DeletionPlan],
    jobs: QuerySet[Job],
    user: User,
    request: HttpRequest | None,
) -> DeletionPlan:
    """Check, log and delete in one transaction. The team row is locked first, as
    jobs.services.create_job does, so no job can start on the object in between."""
    require_delete(user, team)
    with transaction.atomic():
        Team.objects.select_for_update().get(pk=team.pk)
        plan = plan_for()
        refuse_or_audit(plan, team=team, target=target, user=user, request=request)
        # Jobs first: a dataset is RESTRICTed by the jobs that used it.
        jobs.delete()
        target.delete()
    log.info("%s %s deleted by %s", plan.kind, target.uuid, user.get_username())
    return plan


def delete_project(
    *, project: Project, user: User, request: HttpRequest | None = None
) -> DeletionPlan:
    """Delete a project with its model versions, datasets and finished jobs."""
    return _delete(
        team=project.team,
        target=project,
        plan_for=lambda: plan_project_deletion(project),
        jobs=Job.objects.filter(project=project),
        user=user,
        request=request,
    )


def delete_model_version(
    *, version: ModelVersion, user: User, request: HttpRequest | None = None
) -> DeletionPlan:
    """Delete a model version (its ONNX file, any uploaded source) and its finished jobs."""
    return _delete(
        team=version.project.team,
        target=version,
        plan_for=lambda: plan_model_version_deletion(version),
        jobs=Job.objects.filter(model_version=version),
        user=user,
        request=request,
    )


def delete_dataset(
    *, dataset: Dataset, user: User, request: HttpRequest | None = None
) -> DeletionPlan:
    """Delete a dataset and the finished jobs that used it."""
    return _delete(
        team=dataset.project.team,
        target=dataset,
        plan_for=lambda: plan_dataset_deletion(dataset),
        jobs=Job.objects.filter(dataset=dataset),
        user=user,
        request=request,
    )
