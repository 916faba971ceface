from __future__ import annotations

import pytest
from django.urls import reverse

from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_it_creates_a_queued_job_from_the_form_and_shows_it(
    client, owner, model_version, fast_recipe, django_capture_on_commit_callbacks
):
    import yaml

    client.force_login(owner.user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            reverse("jobs-create", args=[model_version.uuid]), {"recipe": yaml.dump(fast_recipe)}
        )
    job = Job.objects.get()
    assert response["Location"] == reverse("jobs-detail", args=[job.uuid])
    assert job.status == "queued" and job.recipe["evaluate"]["latency_runs"] == 5
    assert job.celery_task_id and len(callbacks) == 1  # enqueued only after commit
    page = client.get(response["Location"]).content.decode()
    assert 'hx-trigger="every 2s"' in page and "Queued" in page


def test_it_explains_an_invalid_recipe_and_creates_no_job(client, owner, model_version):
    client.force_login(owner.user)
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]),
        {"recipe": "version: 1\nsteps:\n  - quantize: {mode: sparkle-int3}\n"},
        follow=True,
    )
    assert not Job.objects.exists()
    assert "The job was not started" in response.content.decode()
    assert "mode" in response.content.decode()


def test_it_stops_polling_once_the_job_is_terminal(client, owner, model_version, fast_recipe):
    job = Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=fast_recipe,
    )
    client.force_login(owner.user)
    url = reverse("jobs-status", args=[job.uuid])
    running = client.get(url, HTTP_HX_REQUEST="true")
    assert running.status_code == 200 and "every 2s" in running.content.decode()

    job.claim(worker="w")
    job.fail("Engine said no.")
    done = client.get(url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286
    body = done.content.decode()
    assert "every 2s" not in body and "Engine said no." in body


def test_it_cancels_a_queued_job(client, owner, model_version, fast_recipe):
    job = Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=fast_recipe,
    )
    client.force_login(owner.user)
    client.post(reverse("jobs-cancel", args=[job.uuid]))
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_it_forbids_viewers_to_start_jobs(client, viewer, model_version, fast_recipe):
    client.force_login(viewer.user)
    response = client.post(reverse("jobs-create", args=[model_version.uuid]), {"recipe": ""})
    assert response.status_code == 403
    assert not Job.objects.exists()


def test_it_refuses_static_int8_without_a_dataset_before_queueing(client, owner, model_version):
    client.force_login(owner.user)
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]),
        {"recipe": "version: 1\nsteps:\n  - quantize: {mode: static-int8}\n"},
        follow=True,
    )
    assert not Job.objects.exists()
    assert "needs calibration samples: choose a dataset" in response.content.decode()


def test_it_starts_a_static_int8_job_with_a_dataset(
    client, owner, model_version, dataset, django_capture_on_commit_callbacks
):
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(
            reverse("jobs-create", args=[model_version.uuid]),
            {
                "recipe": "version: 1\nsteps:\n  - quantize: {mode: static-int8}\n",
                "dataset": str(dataset.uuid),
            },
        )
    job = Job.objects.get()
    assert job.dataset == dataset and job.status == "queued"
