"""A queued job's and a pending conversion's place in their queue, counted from the database
(web.queue_position), on the pages and in the API; another team's work is counted, never named."""

from __future__ import annotations

import pytest
from django.urls import reverse

from compress_engine import default_recipe
from jobs.models import Job
from jobs.titles import job_title
from web.queue_position import conversion_position, job_position, ordinal

pytestmark = pytest.mark.django_db


def _job(version, status: str = "queued", queue: str = "cpu") -> Job:
    return Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        recipe=default_recipe().model_dump(mode="json"),
        status=status,
        queue=queue,
    )


@pytest.fixture
def token_for():
    from accounts.tokens import create_token

    return lambda persona: create_token(user=persona.user, name="tests").raw


def test_it_writes_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th",
    ]  # fmt: skip


def test_a_queued_job_sees_the_running_and_earlier_queued_jobs_of_its_queue(model_version):
    running = _job(model_version, status="running")
    first = _job(model_version)
    _job(model_version, queue="gpu")  # another queue: not ahead
    _job(model_version, status="succeeded")  # finished: not ahead
    mine = _job(model_version)
    _job(model_version)  # queued after it: behind, not ahead

    position = job_position(mine)

    assert position.text == (
        f"3rd in the cpu queue, behind: {job_title(running)} · job {str(running.uuid)[:8]} "
        f"(running), {job_title(first)} · job {str(first.uuid)[:8]}"
    )
    assert job_title(first).startswith(f"{model_version} · ")
    assert job_position(first).text.startswith("2nd in the cpu queue, behind: ")
    assert job_position(running) is None


def test_it_counts_but_never_names_another_teams_jobs(model_version, outsider):
    from accounts.models import Membership
    from factories import ProjectFactory
    from registry.models import ModelVersion

    other_project = ProjectFactory(team=Membership.objects.get(user=outsider.user).team)
    theirs = ModelVersion.objects.create(
        project=other_project, name="secret-model", version=1, sha256="0" * 64
    )
    _job(theirs, status="running")
    _job(theirs)
    mine = _job(model_version)

    text = job_position(mine).text

    assert text == "3rd in the cpu queue, behind: 2 jobs"
    assert "secret" not in text
    assert job_position(_job(model_version)).text.endswith(
        f"job {str(mine.uuid)[:8]}, 2 other jobs"
    )


def test_the_job_page_and_api_show_the_position(client, owner, model_version, token_for):
    running = _job(model_version, status="running")
    mine = _job(model_version)
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[mine.uuid])).content.decode()
    status = client.get(reverse("jobs-status", args=[mine.uuid])).content.decode()
    api = client.get(
        f"/api/v1/jobs/{mine.uuid}", HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}"
    ).json()

    expected = f"2nd in the cpu queue, behind: {job_title(running)} · job {str(running.uuid)[:8]}"
    assert expected in page and expected in status
    assert 'data-testid="queue-position"' in page
    assert api["queue_position"].startswith(expected)
    done = client.get(
        f"/api/v1/jobs/{running.uuid}", HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}"
    )
    assert done.json()["queue_position"] is None


def test_a_pending_conversion_shows_its_place_in_the_convert_queue(
    client, owner, project, torch_model_files, settings, token_for
):
    from conftest import _ingest
    from registry.services import ingest_model_upload

    def upload():
        return _ingest(
            lambda **kw: ingest_model_upload(**kw, input_shapes="1x3x16x16"),
            project,
            owner,
            torch_model_files["torchscript"],
        )

    first, second = upload(), upload()
    first.mark_conversion_started()
    first.refresh_from_db()
    client.force_login(owner.user)

    queue = settings.MODELPRESS_CONVERT_QUEUE
    assert conversion_position(first) is None  # a worker is on it: the page says so
    expected = f"2nd in the {queue} queue, behind: net v1 (converting)"
    assert conversion_position(second).text == expected
    page = client.get(reverse("registry-model-version", args=[second.uuid])).content.decode()
    assert expected in page
    polled = client.get(reverse("registry-model-version-status", args=[second.uuid]))
    assert "2nd in the" in polled.content.decode()
    api = client.get(
        f"/api/v1/models/{second.uuid}", HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}"
    ).json()
    assert api["queue_position"] == expected


def test_uploads_send_their_conversion_to_the_convert_queue(
    project, owner, torch_model_files, settings, monkeypatch, django_capture_on_commit_callbacks
):
    from config.celery import app
    from conftest import _ingest
    from registry.services import ingest_model_upload
    from web.queue import CONVERT_MODEL_VERSION

    sent = []
    monkeypatch.setattr(app, "send_task", lambda name, **kw: sent.append((name, kw)))
    with django_capture_on_commit_callbacks(execute=True):
        version = _ingest(
            lambda **kw: ingest_model_upload(**kw, input_shapes="1x3x16x16"),
            project,
            owner,
            torch_model_files["torchscript"],
        )

    assert sent == [
        (
            CONVERT_MODEL_VERSION,
            {"args": [str(version.uuid)], "queue": settings.MODELPRESS_CONVERT_QUEUE},
        )
    ]
    assert settings.MODELPRESS_CONVERT_QUEUE not in (
        settings.MODELPRESS_CPU_QUEUE,
        settings.MODELPRESS_GPU_QUEUE,
    )
