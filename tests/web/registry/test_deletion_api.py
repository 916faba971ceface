"""DELETE /api/v1/projects/{id}, /models/{id} and /datasets/{id}: the same rules as the
pages (owners and admins; 409 while a job uses the object; 404 outside the team)."""

from __future__ import annotations

import pytest

from accounts.models import AuditEvent
from accounts.tokens import create_token
from conftest import storage_files
from factories import JobFactory
from registry.models import Dataset, ModelVersion, Project

pytestmark = pytest.mark.django_db


def _delete(client, persona, path: str):
    token = create_token(user=persona.user, name="tests").raw
    return client.delete(f"/api/v1{path}", headers={"Authorization": f"Bearer {token}"})


def test_an_owner_deletes_a_model_version_and_its_file(
    client, owner, model_version, django_capture_on_commit_callbacks
):
    name = model_version.file.name
    with django_capture_on_commit_callbacks(execute=True):
        response = _delete(client, owner, f"/models/{model_version.uuid}")
    assert response.status_code == 204 and response.content == b""
    assert not ModelVersion.objects.exists() and name not in storage_files()
    assert AuditEvent.objects.get(action="deleted").target_type == "ModelVersion"


def test_an_admin_deletes_a_dataset_and_a_project(client, admin, project, dataset):
    assert _delete(client, admin, f"/datasets/{dataset.uuid}").status_code == 204
    assert not Dataset.objects.exists()
    assert _delete(client, admin, f"/projects/{project.uuid}").status_code == 204
    assert not Project.objects.exists()
    assert AuditEvent.objects.filter(action="deleted").count() == 2


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_members_and_viewers_get_403(client, persona, request, project, model_version, dataset):
    who = request.getfixturevalue(persona)
    for path in (
        f"/models/{model_version.uuid}",
        f"/datasets/{dataset.uuid}",
        f"/projects/{project.uuid}",
    ):
        response = _delete(client, who, path)
        assert response.status_code == 403
        assert "Only a team owner or admin can delete" in response.json()["detail"]
    assert Project.objects.exists() and ModelVersion.objects.exists() and Dataset.objects.exists()


def test_an_outsider_gets_404(client, outsider, project, model_version, dataset):
    for path in (
        f"/models/{model_version.uuid}",
        f"/datasets/{dataset.uuid}",
        f"/projects/{project.uuid}",
    ):
        assert _delete(client, outsider, path).status_code == 404
    assert Project.objects.exists() and ModelVersion.objects.exists() and Dataset.objects.exists()


def test_a_running_job_makes_it_409(client, owner, project, model_version, dataset):
    job = JobFactory(model_version=model_version, dataset=dataset)
    assert job.claim(worker="w@test")
    for path in (
        f"/models/{model_version.uuid}",
        f"/datasets/{dataset.uuid}",
        f"/projects/{project.uuid}",
    ):
        response = _delete(client, owner, path)
        assert response.status_code == 409
        assert "is in use by 1 queued or running job" in response.json()["detail"]
    assert Project.objects.exists() and ModelVersion.objects.exists() and Dataset.objects.exists()
