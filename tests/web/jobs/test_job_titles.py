"""Jobs are named by what they did (jobs.titles): model version · preset or steps · dataset,
everywhere a job is listed, instead of a UUID prefix."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from factories import JobFactory
from jobs.titles import job_title

pytestmark = pytest.mark.django_db

STATIC = {
    "version": 1,
    "steps": [
        {
            "quantize": {
                "mode": "static-int8",
                "per_channel": True,
                "calibration": "percentile",
                "percentile": 99.999,
                "samples": 256,
            }
        }
    ],
}
CUSTOM = {
    "version": 1,
    "steps": [
        {"prune": {"method": "channel", "amount": 0.3}},
        {"quantize": {"mode": "dynamic-int8"}},
    ],
}


@pytest.fixture
def jobs(model_version, dataset):
    return (
        JobFactory(model_version=model_version, dataset=dataset, recipe=STATIC),
        JobFactory(model_version=model_version, recipe=CUSTOM),
    )


def test_a_job_is_titled_by_its_preset_or_its_steps_and_its_dataset(jobs, dataset):
    preset_job, custom_job = jobs
    assert job_title(preset_job) == f"tiny_cnn v1 · Static int8 (calibrated) · {dataset.name}"
    assert job_title(custom_job) == "tiny_cnn v1 · Pruning → Dynamic int8 quantization"


def _titles(page: str) -> list[str]:
    return re.findall(r'data-testid="job-title"[^>]*>([^<]+)<', page)


def test_the_project_and_model_pages_list_jobs_by_title(client, owner, model_version, jobs):
    client.force_login(owner.user)
    expected = {job_title(j) for j in jobs}
    project = client.get(reverse("registry-project", args=[model_version.project.uuid]))
    assert set(_titles(project.content.decode())) == expected
    version = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    assert set(_titles(version.content.decode())) == expected
    detail = client.get(reverse("jobs-detail", args=[jobs[0].uuid])).content.decode()
    assert _titles(detail) == [job_title(jobs[0])]
    assert f"<title>{job_title(jobs[0])} · ModelPress</title>" in detail
    # The titles carry the whole name as a tooltip, for names cut short on the page.
    assert f'title="{job_title(jobs[1])}"' in project.content.decode()


def test_the_api_gives_each_job_a_title(client, owner, model_version, jobs):
    from accounts.tokens import create_token

    token = create_token(user=owner.user, name="tests").raw
    headers = {"Authorization": f"Bearer {token}"}
    listed = client.get(f"/api/v1/projects/{model_version.project.uuid}/jobs", headers=headers)
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert {i["title"] for i in items} == {job_title(j) for j in jobs}
    one = client.get(f"/api/v1/jobs/{jobs[0].uuid}", headers=headers).json()
    assert one["title"] == job_title(jobs[0])
