"""Team-scoped lookups for jobs and artifacts: outside the user's teams is a 404."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.access import teams_for
from accounts.models import User
from jobs.models import Artifact, Job


def jobs_for(user: User) -> QuerySet[Job]:
    return Job.objects.filter(team__in=teams_for(user))


def get_job_for_user(user: User, job_uuid: UUID) -> Job:
    return get_object_or_404(
        jobs_for(user).select_related("project", "model_version", "team"), uuid=job_uuid
    )


def get_artifact_for_user(user: User, artifact_uuid: UUID) -> Artifact:
    return get_object_or_404(
        Artifact.objects.filter(job__in=jobs_for(user)).select_related("job"), uuid=artifact_uuid
    )
