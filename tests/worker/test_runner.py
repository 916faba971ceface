"""run_job, called directly: the tested core of the worker (no Celery involved)."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile

from conftest import storage_files
from jobrunner.runner import run_job
from jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(model_version, owner, fast_recipe):
    return Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=fast_recipe,
        created_by=owner.user,
    )


def test_it_runs_a_job_to_success_and_stores_a_loadable_artifact(job, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from compress_engine import Report

    run_job(str(job.uuid), task_id="t-1", worker="w@test")

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.progress == 1.0 and job.started_at and job.finished_at and job.worker == "w@test"
    report = Report.model_validate(job.report)
    assert report.original.size_bytes == job.model_version.size_bytes
    assert report.fidelity.per_output[0].cosine_similarity > 0.99
    artifact = Artifact.objects.get(job=job)
    assert artifact.sha256 == report.artifacts[0].sha256
    local = tmp_path / "model.onnx"
    with artifact.file.open("rb") as stored:
        local.write_bytes(stored.read())
    assert local.stat().st_size == artifact.size_bytes
    session = ort.InferenceSession(str(local), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.zeros((2, 1, 8, 8), dtype=np.float32)})
    assert logits.shape == (2, 10)
    # No temporary ".partial" files are left next to the artifact.
    assert not [name for name in storage_files() if name.endswith(".partial")]


def test_it_does_nothing_when_a_finished_job_is_delivered_again(job):
    run_job(str(job.uuid))
    job.refresh_from_db()
    finished_at, artifacts = job.finished_at, Artifact.objects.count()

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded" and job.finished_at == finished_at
    assert Artifact.objects.count() == artifacts


def test_it_fails_with_the_engine_message_when_the_model_is_broken(job):
    version = job.model_version
    version.file.storage.delete(version.file.name)
    version.file.storage.save(version.file.name, ContentFile(b"corrupted on disk"))

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error and "Internal error" not in job.error
    assert not Artifact.objects.filter(job=job).exists()


def test_it_stops_and_keeps_nothing_when_cancel_is_requested(job, monkeypatch):
    real_record = Job.record_progress

    def cancel_mid_run(self, stage, fraction):
        real_record(self, stage, fraction)
        if fraction > 0.3:
            Job.objects.filter(pk=self.pk).update(cancel_requested=True)

    monkeypatch.setattr(Job, "record_progress", cancel_mid_run)
    before = storage_files()

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "cancelled"
    assert not Artifact.objects.filter(job=job).exists()
    assert storage_files() == before


def test_it_removes_stored_artifacts_when_recording_them_fails(job, monkeypatch):
    def refuse(self, report):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Job, "succeed", refuse)
    before = storage_files()

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "failed" and "database went away" in job.error
    assert storage_files() == before
    assert not Artifact.objects.exists()


def test_it_ignores_a_job_that_does_not_exist():
    run_job("00000000-0000-0000-0000-000000000000")


def test_it_removes_its_scratch_directory(job, tmp_path, settings):
    settings.MODELPRESS_SCRATCH_DIR = str(tmp_path)
    run_job(str(job.uuid))
    assert list(tmp_path.iterdir()) == []


def test_it_runs_static_int8_with_a_dataset_and_shows_accuracy(
    trained_model_version, dataset, owner, client
):
    from django.urls import reverse

    from compress_engine import Report

    job = Job.objects.create(
        team=trained_model_version.project.team,
        project=trained_model_version.project,
        model_version=trained_model_version,
        dataset=dataset,
        recipe={
            "version": 1,
            "steps": [{"quantize": {"mode": "static-int8", "samples": 64}}],
            "evaluate": {"latency_runs": 5, "warmup": 1},
        },
        created_by=owner.user,
    )

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    report = Report.model_validate(job.report)
    assert report.data.samples == dataset.samples and report.data.labels
    assert report.fidelity.inputs == "evaluation split"
    assert report.accuracy.samples == report.data.evaluation_samples
    # A trained CNN keeps its accuracy within a couple of points under static int8.
    assert abs(report.accuracy.drop_points) < 3.0
    assert report.quantization.mode == "static-int8" and report.quantization.calibration

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert 'data-testid="accuracy"' in page and "evaluation split" in page


def _run_recipe(version, dataset, owner, recipe):
    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        dataset=dataset,
        recipe=recipe,
        created_by=owner.user,
    )
    run_job(str(job.uuid))
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


def test_it_shows_the_accuracy_aware_trials_and_sensitivity(
    trained_model_version, dataset, owner, client
):
    from django.urls import reverse

    job = _run_recipe(
        trained_model_version,
        dataset,
        owner,
        {
            "version": 1,
            "steps": [
                {
                    "quantize": {
                        "mode": "static-int8",
                        "samples": 64,
                        "sensitivity": True,
                        "accuracy_aware": True,
                        "max_trials": 3,
                    }
                }
            ],
            # Stricter than int8 reaches on this model, so the search has to run trials.
            "evaluate": {"latency_runs": 5, "warmup": 1, "min_fidelity": 0.9999999},
        },
    )
    search = job.report["search"]
    assert search["metric"] == "cosine" and search["budget"] == 0.9999999
    assert len(search["trials"]) >= 2 and job.report["sensitivity"]

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert 'data-testid="trials"' in page and 'data-testid="sensitivity"' in page
    assert "Latency p50, batch 1" in page and "MACs (batch 1)" in page


def test_it_shows_what_auto_decided(trained_model_version, dataset, owner, client):
    from django.urls import reverse

    job = _run_recipe(
        trained_model_version,
        dataset,
        owner,
        {
            "version": 1,
            "steps": [{"quantize": {"mode": "auto"}}],
            "evaluate": {"latency_runs": 5, "warmup": 1},
        },
    )
    auto = job.report["auto"]
    assert auto["candidates"][0]["mode"] == "static-int8"  # a conv model, with data

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    decision = page.split('data-testid="auto-decision">', 1)[1].split("</p>", 1)[0]
    if auto["pick"] is None:
        assert "Keep the original" in decision
    else:
        assert f"Picked <strong>{auto['pick']}</strong>" in decision
