"""Team quotas on real rows: storage used, storage check, concurrent-job check."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts import quotas
from factories import ProjectFactory
from jobs.models import Artifact, Job
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def _job(model_version, owner, status: str = "queued") -> Job:
    job = Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe={},
        created_by=owner.user,
    )
    if status in {"running", "succeeded"}:
        job.claim(worker="w")
    if status == "succeeded":
        job.succeed({})
    if status == "cancelled":
        job.cancel()
    return job


def _artifact(job: Job, size: int) -> Artifact:
    artifact = Artifact(job=job, name="m.onnx", format="onnx", size_bytes=size, sha256="0")
    artifact.file.save("m.onnx", ContentFile(b"x" * size))
    return artifact


def test_it_sums_model_versions_datasets_and_artifacts(team, owner, model_version, dataset):
    job = _job(model_version, owner, "succeeded")
    _artifact(job, 1000)
    # Another team's model does not count.
    other = ProjectFactory()
    ModelVersion.objects.create(
        project=other, name="m", version=1, original_filename="m.onnx", file="x.onnx",
        size_bytes=10**9, sha256="0", opset=17, ir_version=8, parameters=1,
    )  # fmt: skip
    expected = model_version.size_bytes + dataset.size_bytes + 1000
    assert model_version.size_bytes > 0 and dataset.size_bytes > 0
    assert quotas.storage_used(team) == expected


def test_it_is_zero_for_an_empty_team(team):
    assert quotas.storage_used(team) == 0


def test_it_refuses_storage_past_the_quota_with_sizes_and_advice(team, owner, model_version):
    used = model_version.size_bytes
    team.storage_quota_bytes = used + 100
    team.save(update_fields=["storage_quota_bytes"])
    quotas.check_storage(team, 100)  # exactly at the limit is fine
    with pytest.raises(quotas.QuotaExceeded) as exc:
        quotas.check_storage(team, 101)
    message = str(exc.value)
    assert team.name in message
    assert quotas.human_size(used) in message and quotas.human_size(used + 100) in message
    assert "Delete" in message and "administrator" in message


def test_it_uses_the_site_default_when_the_team_has_none(team, owner, model_version, settings):
    settings.MODELPRESS_TEAM_STORAGE_QUOTA_BYTES = model_version.size_bytes
    assert team.storage_quota_bytes is None
    quotas.check_storage(team, 0)
    with pytest.raises(quotas.QuotaExceeded):
        quotas.check_storage(team, 1)
    # A team value wins over the setting.
    team.storage_quota_bytes = 10 * 1024**3
    quotas.check_storage(team, 1024**3)


def test_it_states_the_message_in_human_sizes(team, settings):
    settings.MODELPRESS_TEAM_STORAGE_QUOTA_BYTES = 20 * 1024**3
    with pytest.raises(quotas.QuotaExceeded, match=r"of its 20\.0 GB storage quota"):
        quotas.check_storage(team, 21 * 1024**3)


def test_it_counts_only_queued_and_running_jobs(team, owner, model_version, settings):
    settings.MODELPRESS_TEAM_MAX_CONCURRENT_JOBS = 2
    _job(model_version, owner, "succeeded")
    _job(model_version, owner, "cancelled")
    _job(model_version, owner, "queued")
    quotas.check_job_start(team)
    _job(model_version, owner, "running")
    with pytest.raises(quotas.QuotaExceeded, match="already has 2 of its 2 concurrent jobs"):
        quotas.check_job_start(team)
    team.max_concurrent_jobs = 3
    quotas.check_job_start(team)


def test_it_shows_usage_against_the_quota_on_the_team_page(client, team, viewer, model_version):
    team.storage_quota_bytes = 2 * 1024**2
    team.max_concurrent_jobs = 7
    team.save(update_fields=["storage_quota_bytes", "max_concurrent_jobs"])
    _job(model_version, viewer, "queued")
    client.force_login(viewer.user)
    body = client.get(reverse("accounts-team", args=[team.uuid])).content.decode()
    assert "of 2.0\xa0MB" in body and "1 of 7" in body


def test_it_counts_the_kept_source_of_a_converted_upload(team, owner, model_version):
    before = quotas.storage_used(team)
    version = ModelVersion.objects.create(
        project=model_version.project, name="ts", version=1, original_filename="net.pt",
        source_format="torchscript", status=ModelVersion.Status.CONVERTING,
        source_size_bytes=5000, sha256="0",
    )  # fmt: skip
    assert quotas.storage_used(team) == before + 5000

    version.fail_conversion("the converter died")

    assert quotas.storage_used(team) == before
