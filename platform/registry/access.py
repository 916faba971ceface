"""Team-scoped lookups: an object outside the user's teams is a 404, never a 403."""

from __future__ import annotations

from uuid import UUID

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.access import teams_for
from accounts.models import User
from registry.models import Dataset, ModelVersion, Project


def projects_for(user: User) -> QuerySet[Project]:
    return Project.objects.filter(team__in=teams_for(user))


def get_project_for_user(user: User, project_uuid: UUID) -> Project:
    return get_object_or_404(projects_for(user).select_related("team"), uuid=project_uuid)


def get_model_version_for_user(user: User, version_uuid: UUID) -> ModelVersion:
    return get_object_or_404(
        ModelVersion.objects.filter(project__in=projects_for(user)).select_related(
            "project", "project__team"
        ),
        uuid=version_uuid,
    )


def get_dataset_for_user(user: User, dataset_uuid: UUID) -> Dataset:
    return get_object_or_404(
        Dataset.objects.filter(project__in=projects_for(user)).select_related(
            "project", "project__team", "uploaded_by"
        ),
        uuid=dataset_uuid,
    )
