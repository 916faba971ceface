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


def test_it_records_where_the_job_ran_and_shows_it(
    model_version, owner, fast_recipe, client, settings, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from compress_engine.device import probe_worker_device
    from jobs.services import create_job

    with django_capture_on_commit_callbacks(execute=False):
        job = create_job(model_version=model_version, user=owner.user, recipe=fast_recipe)
    run_job(str(job.uuid), task_id=job.celery_task_id, worker="w@test")

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.queue == settings.MODELPRESS_CPU_QUEUE  # no GPU worker in the test database
    assert job.device == probe_worker_device().summary and "cores" in job.device
    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert (
        f'data-testid="job-ran-on">Ran on w@test ({job.device}) from the '
        f"{settings.MODELPRESS_CPU_QUEUE} queue</span>"
    ) in page
    api = client.get(f"/api/v1/jobs/{job.uuid}").json()
    assert (api["queue"], api["worker"], api["device"]) == (job.queue, "w@test", job.device)


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
    # The worker measured the timing's noise band, and the page says what it means.
    assert auto["noise"] is not None and 'data-testid="auto-noise"' in page


PRUNE_DISTILL = {
    "version": 1,
    "steps": [
        {"prune": {"method": "channel", "amount": 0.5}},
        {"distill": {"epochs": 2, "batch_size": 32}},
    ],
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": []},
}


def test_it_runs_prune_and_distill_and_records_the_training_curve(
    trained_model_version, dataset, owner
):
    from compress_engine import Report

    job = _run_recipe(trained_model_version, dataset, owner, PRUNE_DISTILL)

    report = Report.model_validate(job.report)
    assert report.pruning.method == "channel" and report.pruning.layers
    assert report.pruning.parameters_after < report.pruning.parameters_before
    assert report.result.parameters < report.original.parameters  # really smaller
    (training,) = report.training
    assert training.kind == "distill" and training.teacher == "original"
    # Every epoch reached the job row while it ran, the same points the report keeps.
    assert [p["epoch"] for p in job.training] == [p.epoch for p in training.history] == [0, 1, 2]
    assert job.training == [p.model_dump(mode="json") for p in training.history]
    (artifact,) = Artifact.objects.filter(job=job)
    assert artifact.name == "model.distilled.onnx" and artifact.size_bytes < (
        job.model_version.size_bytes
    )


def test_it_distils_from_another_model_version_of_the_team(
    model_version, trained_model_version, dataset, owner, django_capture_on_commit_callbacks
):
    from compress_engine import Report
    from jobs.services import create_job

    teacher = str(trained_model_version.uuid)
    recipe = {**PRUNE_DISTILL, "steps": [{"distill": {"epochs": 1, "teacher": teacher}}]}
    with django_capture_on_commit_callbacks(execute=False):
        job = create_job(
            model_version=model_version, user=owner.user, recipe=recipe, dataset=dataset
        )

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    (training,) = Report.model_validate(job.report).training
    assert training.teacher == teacher


def test_it_fails_clearly_when_the_teacher_was_deleted_after_the_job_was_queued(
    model_version, trained_model_version, dataset, owner, django_capture_on_commit_callbacks
):
    from jobs.services import create_job

    teacher = str(trained_model_version.uuid)
    recipe = {**PRUNE_DISTILL, "steps": [{"distill": {"epochs": 1, "teacher": teacher}}]}
    with django_capture_on_commit_callbacks(execute=False):
        job = create_job(
            model_version=model_version, user=owner.user, recipe=recipe, dataset=dataset
        )
    trained_model_version.delete()

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "failed" and "no longer exists" in job.error
    assert "Internal error" not in job.error


def test_it_stops_between_epochs_when_cancel_is_requested(trained_model_version, dataset, owner):
    real_record = Job.record_training

    def cancel_after_first_epoch(self, point):
        kept = real_record(self, point)
        if point["epoch"] == 1:
            Job.objects.filter(pk=self.pk).update(cancel_requested=True)
        return kept

    job = Job.objects.create(
        team=trained_model_version.project.team,
        project=trained_model_version.project,
        model_version=trained_model_version,
        dataset=dataset,
        recipe={**PRUNE_DISTILL, "steps": [{"distill": {"epochs": 50, "patience": None}}]},
        created_by=owner.user,
    )
    before = storage_files()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Job, "record_training", cancel_after_first_epoch)
        run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "cancelled"
    # Stopped at the first epoch's callback, not after all fifty.
    assert [p["epoch"] for p in job.training] == [0, 1]
    assert not Artifact.objects.filter(job=job).exists() and storage_files() == before


def test_it_stores_the_zipped_copy_of_a_magnitude_pruned_model(trained_model_version, owner):
    job = _run_recipe(
        trained_model_version,
        None,
        owner,
        {**PRUNE_DISTILL, "steps": [{"prune": {"method": "magnitude", "amount": 0.6}}]},
    )
    formats = {a.format: a for a in Artifact.objects.filter(job=job)}
    assert set(formats) == {"onnx", "onnx-zip"}
    zipped = formats["onnx-zip"]
    with zipped.file.open("rb") as handle:
        assert handle.read(2) == b"PK"
    assert zipped.size_bytes < formats["onnx"].size_bytes


def test_it_stores_the_tflite_files_that_passed_and_not_the_failed_export(
    model_version, owner, fast_recipe
):
    from compress_engine import Report

    # Without a dataset the full-integer TFLite file cannot be calibrated: the engine reports
    # it as failed, and the job still succeeds with the files that were produced and checked.
    recipe = {
        **fast_recipe,
        "export": ["onnx", "tflite"],
        "tflite": {"precisions": ["fp32", "int8"]},
        "evaluate": {**fast_recipe["evaluate"], "batch_sizes": []},
    }
    before = storage_files()
    job = _run_recipe(model_version, None, owner, recipe)

    report = Report.model_validate(job.report)
    by_name = {a.name: a for a in report.artifacts}
    assert by_name["model.int8.tflite"].status == "failed"
    assert "dataset" in by_name["model.int8.tflite"].failure
    assert {a.name for a in report.files} == {"model.int8.onnx", "model.fp32.tflite"}

    stored = {a.name: a for a in Artifact.objects.filter(job=job)}
    assert set(stored) == {"model.int8.onnx", "model.fp32.tflite"}
    tflite = stored["model.fp32.tflite"]
    assert (tflite.format, tflite.precision) == ("tflite", "fp32")
    assert tflite.sha256 == by_name["model.fp32.tflite"].sha256
    with tflite.file.open("rb") as handle:
        assert handle.read(8)[4:8] == b"TFL3"  # the flatbuffer's file identifier
    new_files = sorted(set(storage_files()) - set(before))
    assert len(new_files) == 2 and not any(n.endswith("int8.tflite") for n in new_files)
