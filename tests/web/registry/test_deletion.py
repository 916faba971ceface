"""Deleting projects, model versions and datasets (registry.deletion): owners and admins
only, never under a queued or running job, logged, and the files gone from storage."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.models import AuditEvent
from conftest import storage_files
from factories import JobFactory
from jobs.models import Artifact, Job, artifact_folder
from registry.deletion import (
    DeletionRefused,
    delete_dataset,
    delete_model_version,
    delete_project,
)
from registry.models import Dataset, ModelVersion, Project

pytestmark = pytest.mark.django_db


def finished_job(version, dataset=None, **fields) -> Job:
    """A succeeded job of `version` with one stored artifact (3 bytes)."""
    job = JobFactory(model_version=version, dataset=dataset, **fields)
    assert job.claim(worker="w@test") and job.succeed({"not": "read"})
    artifact = Artifact(job=job, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    return job


def running_job(version, dataset=None, **fields) -> Job:
    job = JobFactory(model_version=version, dataset=dataset, **fields)
    assert job.claim(worker="w@test")
    return job


def _stored(*names: str) -> set[str]:
    """Which of the storage names (or folders) still hold a file."""
    files = storage_files()
    return {n for n in names if any(f == n or f.startswith(n.rstrip("/") + "/") for f in files)}


def test_it_lets_an_owner_delete_a_model_version_its_jobs_and_their_files(
    owner, model_version, dataset, django_capture_on_commit_callbacks
):
    job = finished_job(model_version, dataset)
    names = (model_version.file.name, artifact_folder(job))
    assert _stored(*names) == set(names)

    with django_capture_on_commit_callbacks(execute=True):
        plan = delete_model_version(version=model_version, user=owner.user)

    assert plan.finished_jobs == 1 and plan.freed_bytes == model_version.size_bytes + 3
    assert not ModelVersion.objects.exists() and not Job.objects.exists()
    assert not Artifact.objects.exists()
    assert _stored(*names) == set()
    # The dataset the job used stays.
    assert Dataset.objects.get() == dataset and _stored(dataset.file.name)
    event = AuditEvent.objects.get(action="deleted")
    assert (event.actor, event.target_type, event.target_id) == (
        owner.user,
        "ModelVersion",
        str(model_version.uuid),
    )
    assert event.target_label == str(model_version)
    assert event.detail == {"kind": "model version", "jobs": 1, "bytes": plan.freed_bytes}


def test_it_lets_an_admin_delete_a_dataset_with_the_finished_jobs_that_used_it(
    admin, model_version, dataset, django_capture_on_commit_callbacks
):
    job = finished_job(model_version, dataset)
    other = finished_job(model_version)  # did not use the dataset: stays

    with django_capture_on_commit_callbacks(execute=True):
        delete_dataset(dataset=dataset, user=admin.user)

    assert not Dataset.objects.exists()
    assert list(Job.objects.all()) == [other]
    assert _stored(dataset.file.name, artifact_folder(job)) == set()
    assert _stored(artifact_folder(other))
    event = AuditEvent.objects.get(action="deleted")
    assert event.target_type == "Dataset" and event.detail["jobs"] == 1


def test_it_deletes_a_project_with_everything_in_it(
    owner, project, model_version, dataset, django_capture_on_commit_callbacks
):
    job = finished_job(model_version, dataset)
    names = (model_version.file.name, dataset.file.name, artifact_folder(job))

    with django_capture_on_commit_callbacks(execute=True):
        plan = delete_project(project=project, user=owner.user)

    assert plan.freed_bytes == model_version.size_bytes + dataset.size_bytes + 3
    assert not Project.objects.exists() and not ModelVersion.objects.exists()
    assert not Dataset.objects.exists() and not Job.objects.exists()
    assert _stored(*names) == set()
    event = AuditEvent.objects.get(action="deleted")
    assert event.target_type == "Project" and event.target_label == project.name


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_it_refuses_members_and_viewers(persona, request, project, model_version, dataset):
    user = request.getfixturevalue(persona).user
    for delete in (
        lambda: delete_model_version(version=model_version, user=user),
        lambda: delete_dataset(dataset=dataset, user=user),
        lambda: delete_project(project=project, user=user),
    ):
        with pytest.raises(PermissionDenied, match="Only a team owner or admin can delete"):
            delete()
    assert ModelVersion.objects.exists() and Dataset.objects.exists()
    assert not AuditEvent.objects.filter(action="deleted").exists()


@pytest.mark.parametrize("state", ["queued", "running"])
def test_it_refuses_while_a_job_on_it_is_queued_or_running(
    state, owner, project, model_version, dataset
):
    job = JobFactory(model_version=model_version, dataset=dataset)
    if state == "running":
        assert job.claim(worker="w@test")

    for delete, what in (
        (lambda: delete_model_version(version=model_version, user=owner.user), "model version"),
        (lambda: delete_dataset(dataset=dataset, user=owner.user), "dataset"),
        (lambda: delete_project(project=project, user=owner.user), "project"),
    ):
        with pytest.raises(DeletionRefused) as refused:
            delete()
        message = str(refused.value)
        assert message.startswith(f"The {what} “")
        assert "is in use by 1 queued or running job" in message
        assert "once that job ends: cancel it or wait" in message
        assert refused.value.status == 409
    assert Job.objects.get() == job
    assert ModelVersion.objects.exists() and Dataset.objects.exists()
    assert not AuditEvent.objects.filter(action="deleted").exists()


def test_it_refuses_a_teacher_of_a_running_job_and_allows_it_once_it_ends(
    owner, project, model_version, trained_cnn_onnx
):
    from conftest import _ingest
    from registry.services import ingest_model_upload

    student = _ingest(ingest_model_upload, project, owner, trained_cnn_onnx)
    recipe = {"version": 1, "steps": [{"distill": {"teacher": str(model_version.uuid)}}]}
    job = running_job(student, recipe=recipe)

    with pytest.raises(DeletionRefused, match="as a distillation teacher"):
        delete_model_version(version=model_version, user=owner.user)

    assert job.fail("stopped") and job.is_terminal
    delete_model_version(version=model_version, user=owner.user)
    # The student's finished job stays: it only learnt from the deleted version.
    assert Job.objects.get() == job


# The pages: GET confirms, POST deletes.


def test_the_confirm_page_says_what_goes_and_post_deletes(
    client, owner, model_version, dataset, django_capture_on_commit_callbacks
):
    finished_job(model_version, dataset)
    client.force_login(owner.user)
    dataset_page = client.get(reverse("registry-dataset", args=[dataset.uuid])).content.decode()
    url = reverse("registry-dataset-delete", args=[dataset.uuid])
    assert url in dataset_page

    page = client.get(url)
    body = page.content.decode()
    assert page.status_code == 200
    assert f"Delete the dataset “{dataset.name}”?" in body
    assert "1 finished job that used it, with its report and files." in body
    assert "Delete dataset</button>" in body
    assert Dataset.objects.exists()  # GET deletes nothing

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, follow=True)
    assert response.redirect_chain[-1][0].startswith(
        reverse("registry-project", args=[dataset.project.uuid])
    )
    assert f"Deleted the dataset “{dataset.name}” and 1 finished job;" in response.content.decode()
    assert not Dataset.objects.exists() and _stored(dataset.file.name) == set()


def test_the_confirm_page_shows_the_refusal_instead_of_a_button(client, owner, model_version):
    running_job(model_version)
    client.force_login(owner.user)
    url = reverse("registry-model-version-delete", args=[model_version.uuid])

    page = client.get(url).content.decode()
    assert "is in use by 1 queued or running job" in page
    assert 'data-testid="confirm-delete-button"' not in page

    response = client.post(url)
    assert response.status_code == 409
    assert "is in use by 1 queued or running job" in response.content.decode()
    assert ModelVersion.objects.exists()


def test_the_project_page_offers_deletion_to_owners_and_admins_only(client, owner, member, project):
    url = reverse("registry-project-delete", args=[project.uuid])
    client.force_login(owner.user)
    assert url in client.get(reverse("registry-project", args=[project.uuid])).content.decode()
    client.force_login(member.user)
    assert url not in client.get(reverse("registry-project", args=[project.uuid])).content.decode()


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_the_pages_answer_403_to_members_and_viewers(
    client, persona, request, project, model_version, dataset
):
    client.force_login(request.getfixturevalue(persona).user)
    for url in (
        reverse("registry-project-delete", args=[project.uuid]),
        reverse("registry-model-version-delete", args=[model_version.uuid]),
        reverse("registry-dataset-delete", args=[dataset.uuid]),
    ):
        assert client.get(url).status_code == 403
        refused = client.post(url)
        assert refused.status_code == 403
        assert "Only a team owner or admin can delete" in refused.content.decode()
    assert Project.objects.exists() and ModelVersion.objects.exists() and Dataset.objects.exists()


def test_the_pages_answer_404_to_an_outsider(client, outsider, model_version):
    client.force_login(outsider.user)
    url = reverse("registry-model-version-delete", args=[model_version.uuid])
    assert client.get(url).status_code == 404 and client.post(url).status_code == 404
    assert ModelVersion.objects.exists()
