"""Deleting a finished job (jobs.services.delete_job): the confirm page, the API, its
artifact folder gone from storage, and a queued or running job refused."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.tokens import create_token
from conftest import storage_files
from factories import JobFactory
from jobs.models import Artifact, Job, artifact_folder
from jobs.services import delete_job
from registry.deletion import DeletionRefused

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed_job(model_version):
    """A failed job with one stored artifact (a file a killed run left behind)."""
    job = JobFactory(model_version=model_version)
    assert job.claim(worker="w@test") and job.fail("it broke")
    artifact = Artifact(job=job, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    return job


def _in_storage(job: Job) -> bool:
    return any(f.startswith(artifact_folder(job) + "/") for f in storage_files())


def test_an_owner_deletes_a_finished_job_and_its_files(
    owner, failed_job, django_capture_on_commit_callbacks
):
    assert _in_storage(failed_job)
    with django_capture_on_commit_callbacks(execute=True):
        plan = delete_job(failed_job, user=owner.user)
    assert plan.freed_bytes == 3
    assert not Job.objects.exists() and not Artifact.objects.exists()
    assert not _in_storage(failed_job)
    event = AuditEvent.objects.get(action="deleted")
    assert (event.actor, event.target_type, event.target_id) == (
        owner.user,
        "Job",
        str(failed_job.uuid),
    )


@pytest.mark.parametrize("state", ["queued", "running"])
def test_it_refuses_a_queued_or_running_job(state, owner, model_version):
    job = JobFactory(model_version=model_version)
    if state == "running":
        assert job.claim(worker="w@test")
    with pytest.raises(DeletionRefused, match=f"The job is still {state}: cancel it"):
        delete_job(job, user=owner.user)
    assert Job.objects.exists() and not AuditEvent.objects.filter(action="deleted").exists()


def test_it_refuses_a_member(member, failed_job):
    with pytest.raises(PermissionDenied):
        delete_job(failed_job, user=member.user)
    assert Job.objects.exists()


def test_the_job_page_links_to_a_confirm_page_that_deletes_on_post(
    client, owner, failed_job, django_capture_on_commit_callbacks
):
    client.force_login(owner.user)
    url = reverse("jobs-delete", args=[failed_job.uuid])
    assert url in client.get(reverse("jobs-detail", args=[failed_job.uuid])).content.decode()
    page = client.get(url).content.decode()
    assert "Delete the job “" in page and "Its report and compressed files" in page
    assert Job.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "registry-model-version", args=[failed_job.model_version.uuid]
    )
    assert not Job.objects.exists() and not _in_storage(failed_job)


def test_the_page_refuses_a_running_job_and_members(client, owner, member, model_version):
    job = JobFactory(model_version=model_version)
    assert job.claim(worker="w@test")
    url = reverse("jobs-delete", args=[job.uuid])
    client.force_login(owner.user)
    assert "delete-job" not in client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    refused = client.post(url)
    assert refused.status_code == 409 and "still running" in refused.content.decode()
    client.force_login(member.user)
    assert client.get(url).status_code == 403 and client.post(url).status_code == 403
    assert Job.objects.exists()


def test_the_api_deletes_a_finished_job_and_refuses_a_running_one(
    client, owner, member, outsider, failed_job, model_version
):
    def delete(persona, job):
        token = create_token(user=persona.user, name="tests").raw
        return client.delete(
            f"/api/v1/jobs/{job.uuid}", headers={"Authorization": f"Bearer {token}"}
        )

    running = JobFactory(model_version=model_version)
    assert running.claim(worker="w@test")
    assert delete(outsider, failed_job).status_code == 404
    assert delete(member, failed_job).status_code == 403
    conflict = delete(owner, running)
    assert conflict.status_code == 409 and "still running" in conflict.json()["detail"]
    assert delete(owner, failed_job).status_code == 204
    assert list(Job.objects.all()) == [running]
