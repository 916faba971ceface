"""Jobs in the team audit log (start, cancel, every download) and the concurrent-job limit."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.models import AuditEvent
from factories import JobFactory
from jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


def _events(team, action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(team=team, action=action).order_by("created_at"))


def _start(client, version, recipe: str = "steps:\n  - quantize: {mode: dynamic-int8}\n"):
    return client.post(reverse("jobs-create", args=[version.uuid]), {"recipe": recipe})


def test_it_records_who_started_a_job(
    client, owner, model_version, django_capture_on_commit_callbacks
):
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks(execute=False):
        response = _start(client, model_version)

    job = Job.objects.get()
    assert response.status_code == 302
    (event,) = _events(model_version.project.team, AuditEvent.Action.STARTED_JOB)
    assert (event.actor, event.target_id) == (owner.user, str(job.uuid))
    assert event.detail == {"model_version": str(model_version.uuid), "steps": ["quantize"]}
    assert event.ip_address == "127.0.0.1"


def test_it_refuses_a_start_past_the_teams_concurrent_job_limit(
    client, owner, model_version, django_capture_on_commit_callbacks
):
    team = model_version.project.team
    team.max_concurrent_jobs = 1
    team.save(update_fields=["max_concurrent_jobs"])
    JobFactory(model_version=model_version, created_by=owner.user)  # queued: counts
    client.force_login(owner.user)

    with django_capture_on_commit_callbacks(execute=False):
        response = _start(client, model_version)

    assert response.status_code == 422
    assert "1 of 1" in response.content.decode() or "limit" in response.content.decode()
    assert Job.objects.count() == 1
    assert not _events(team, AuditEvent.Action.STARTED_JOB)


def test_a_finished_job_frees_its_place_under_the_limit(
    client, owner, model_version, django_capture_on_commit_callbacks
):
    team = model_version.project.team
    team.max_concurrent_jobs = 1
    team.save(update_fields=["max_concurrent_jobs"])
    done = JobFactory(model_version=model_version, created_by=owner.user)
    done.claim(worker="w")
    done.succeed({"not": "rendered"})
    client.force_login(owner.user)

    with django_capture_on_commit_callbacks(execute=False):
        assert _start(client, model_version).status_code == 302

    assert Job.objects.count() == 2


def test_it_records_a_cancel_but_not_a_cancel_of_a_finished_job(client, owner, model_version):
    job = JobFactory(model_version=model_version, created_by=owner.user)
    client.force_login(owner.user)

    client.post(reverse("jobs-cancel", args=[job.uuid]))
    client.post(reverse("jobs-cancel", args=[job.uuid]))  # already cancelled: nothing new

    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    (event,) = _events(job.team, AuditEvent.Action.CANCELLED_JOB)
    assert event.actor == owner.user and event.target_id == str(job.uuid)


@pytest.fixture
def finished_job(model_version, owner):
    job = JobFactory(model_version=model_version, created_by=owner.user)
    job.claim(worker="w")
    job.succeed({"not": "a full report"})
    artifact = Artifact(job=job, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    return job, artifact


def test_every_download_is_recorded_with_the_file_and_the_downloader(client, viewer, finished_job):
    job, artifact = finished_job
    client.force_login(viewer.user)  # viewers may download, and are recorded like anyone

    response = client.get(reverse("jobs-artifact", args=[artifact.uuid]))
    assert b"".join(response.streaming_content) == b"abc"
    assert client.get(reverse("jobs-report", args=[job.uuid])).status_code == 200

    events = _events(job.team, AuditEvent.Action.DOWNLOADED)
    assert [(e.actor, e.detail["file"]) for e in events] == [
        (viewer.user, "model.int8.onnx"),
        (viewer.user, f"report-{job.uuid}.json"),
    ]
    assert all(e.detail["job"] == str(job.uuid) for e in events)


def test_an_outsiders_download_attempt_is_a_404_and_records_nothing(client, outsider, finished_job):
    job, artifact = finished_job
    client.force_login(outsider.user)

    assert client.get(reverse("jobs-artifact", args=[artifact.uuid])).status_code == 404
    assert client.get(reverse("jobs-bundle", args=[job.uuid])).status_code == 404

    assert not AuditEvent.objects.filter(action=AuditEvent.Action.DOWNLOADED).exists()


def test_a_viewer_trying_to_start_a_job_is_told_why(client, viewer, model_version):
    client.force_login(viewer.user)

    response = _start(client, model_version)

    assert response.status_code == 403
    assert "Viewers can look and download" in response.content.decode()
    assert not Job.objects.exists()


def test_a_model_still_converting_cannot_start_a_job(
    client, owner, model_version, django_capture_on_commit_callbacks
):
    model_version.status = model_version.Status.CONVERTING
    model_version.save(update_fields=["status"])
    client.force_login(owner.user)

    with django_capture_on_commit_callbacks(execute=False):
        response = _start(client, model_version)

    assert response.status_code == 422
    assert "ready" in response.content.decode()
    assert not Job.objects.exists()
