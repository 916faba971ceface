"""The job page for prune/distill/finetune runs: the live curve while running, and the
pruning and training sections of the results, from reports of real engine runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.urls import reverse

from jobs.models import Job

pytestmark = pytest.mark.django_db

EVALUATE = {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8}


def _compress(version, data: Path, recipe: dict, out_dir: Path, teachers=None):
    """A real engine run on the version's stored file; returns (report, points seen live)."""
    from compress_engine import compress

    points = []
    report = compress(
        Path(version.file.path),
        recipe,
        data=data,
        out_dir=out_dir,
        on_training=points.append,
        teachers=teachers,
    )
    return report, points


def _job(version, owner, recipe: dict, dataset=None) -> Job:
    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        dataset=dataset,
        recipe=recipe,
        created_by=owner.user,
    )
    assert job.claim(worker="w@test")
    return job


def _finish(job: Job, report, out_dir: Path) -> None:
    # The runner's own storing step: artifacts saved, then recorded with the report.
    from jobrunner.runner import _store_results

    _store_results(job, report, out_dir)


@pytest.fixture
def teacher_version(project, owner, trained_cnn_onnx):
    from conftest import _ingest
    from registry.services import ingest_model_upload

    return _ingest(ingest_model_upload, project, owner, trained_cnn_onnx)


def test_it_shows_the_pruning_and_training_sections_of_a_prune_distill_run(
    client, owner, model_version, teacher_version, dataset, pattern_npz, tmp_path
):
    teacher = str(teacher_version.uuid)
    recipe = {
        "version": 1,
        "steps": [
            {"prune": {"method": "channel", "amount": 0.5}},
            {"distill": {"epochs": 2, "batch_size": 32, "teacher": teacher}},
        ],
        "evaluate": EVALUATE,
    }
    report, _ = _compress(
        model_version,
        pattern_npz,
        recipe,
        tmp_path / "out",
        teachers={teacher: Path(teacher_version.file.path)},
    )
    job = _job(model_version, owner, recipe, dataset)
    _finish(job, report, tmp_path / "out")

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    pruning = page.split('data-testid="pruning"', 1)[1].split("</section>", 1)[0]
    assert "Structured (channel) pruning" in pruning and "Importance l2" in pruning
    layers = pruning.split('data-testid="pruned-layers"', 1)[1].split("</table>", 1)[0]
    for layer in report.pruning.layers:
        assert f"<code>{layer.name}</code>" in layers
    # The first convolution keeps half its 8 channels; the output layer is left whole.
    assert "<td>8</td>\n        <td>4</td>\n        <td>50.0%</td>" in layers
    assert "(left whole)" in layers
    totals = pruning.split('data-testid="pruning-totals"', 1)[1].split("</table>", 1)[0]
    assert f"{report.pruning.parameters_before:,}" in totals
    assert f"{report.pruning.macs_after:,}" in totals and 'class="better"' in totals
    trip = report.pruning.round_trip
    assert f"max abs diff {trip.max_abs_diff:.3g} against a tolerance of {trip.tolerance:.3g}" in (
        pruning
    )

    training = page.split('data-testid="training"', 1)[1].split("</section>", 1)[0]
    details = report.training[0]
    # The teacher is named, not shown as an id.
    assert f"distill from {teacher_version.name} v{teacher_version.version}" in training
    assert details.loss in training and details.device in training
    assert f"{details.train_samples} to train on" in training
    assert f"{details.validation_samples} held out" in training
    assert f"{details.epochs_run} epochs run" in training and " ms per step" in training
    metric = training.split('data-testid="training-metric">', 1)[1].split("</dd>", 1)[0]
    assert f"{details.before:.2f}% before" in metric and f"at epoch {details.best_epoch}" in metric
    # The curve: a canvas naming its data, and the data itself, one value per epoch.
    assert 'data-training-chart="training-data-0"' in training
    chart = json.loads(
        training.split('id="training-data-0" type="application/json">')[1].split("<")[0]
    )
    assert chart["labels"] == [p.epoch for p in details.history] == [0, 1, 2]
    assert chart["metric"] == [p.val_metric for p in details.history]
    assert chart["loss"][0] is None and chart["best_epoch"] == details.best_epoch
    # The run is over: the live curve is not shown any more.
    assert 'data-testid="live-training"' not in page


def test_it_shows_the_search_of_a_macs_target_and_offers_every_artifact(
    client, owner, trained_model_version, dataset, pattern_npz, tmp_path
):
    recipe = {
        "version": 1,
        "steps": [{"prune": {"method": "channel", "target_macs": 0.5}}],
        "evaluate": EVALUATE,
    }
    report, points = _compress(trained_model_version, pattern_npz, recipe, tmp_path / "out")
    assert report.pruning.search and not report.training and not points
    job = _job(trained_model_version, owner, recipe, dataset)
    _finish(job, report, tmp_path / "out")

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    search = page.split('data-testid="pruning-search"', 1)[1].split("</table>", 1)[0]
    assert "macs" in search.lower() and "(kept)" in search
    assert search.count("<tr") == len(report.pruning.search) + 1
    assert 'data-testid="training"' not in page
    for artifact in job.artifacts.all():
        assert reverse("jobs-artifact", args=[artifact.uuid]) in page


def test_it_offers_the_zipped_copy_of_a_magnitude_pruned_model(
    client, owner, trained_model_version, tmp_path
):
    recipe = {
        "version": 1,
        "steps": [{"prune": {"method": "magnitude", "amount": 0.6}}],
        "evaluate": EVALUATE,
    }
    report, _ = _compress(trained_model_version, None, recipe, tmp_path / "out")
    assert {a.format for a in report.artifacts} == {"onnx", "onnx-zip"}
    job = _job(trained_model_version, owner, recipe)
    _finish(job, report, tmp_path / "out")

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert "Unstructured (magnitude) pruning" in page and "Weights before" in page
    zipped = job.artifacts.get(format="onnx-zip")
    assert reverse("jobs-artifact", args=[zipped.uuid]) in page
    response = client.get(reverse("jobs-artifact", args=[zipped.uuid]))
    assert response.status_code == 200
    assert b"".join(response.streaming_content)[:2] == b"PK"  # a zip archive


def test_it_streams_the_deployment_bundle_to_the_team_only(
    client, owner, viewer, outsider, trained_model_version, tmp_path
):
    import io
    import zipfile

    recipe = {"version": 1, "steps": [{"prune": {"amount": 0.5}}], "evaluate": EVALUATE}
    report, _ = _compress(trained_model_version, None, recipe, tmp_path / "out")
    job = _job(trained_model_version, owner, recipe)
    url = reverse("jobs-bundle", args=[job.uuid])
    client.force_login(owner.user)
    assert client.get(url).status_code == 404  # running: no bundle yet
    _finish(job, report, tmp_path / "out")

    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert url in page
    response = client.get(url)
    assert response.status_code == 200 and response.streaming
    assert f"modelpress-{trained_model_version.name}-v1-" in response["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        assert "models/model.pruned.onnx" in zf.namelist()
        assert "## Pruning" in zf.read("REPORT.md").decode()
    client.force_login(viewer.user)
    assert client.get(url).status_code == 200
    client.force_login(outsider.user)
    assert client.get(url).status_code == 404


def test_it_shows_the_live_training_curve_while_the_job_runs(
    client, owner, trained_model_version, dataset, pattern_npz, tmp_path
):
    recipe = {
        "version": 1,
        "steps": [
            {"prune": {"method": "channel", "amount": 0.5}},
            {"distill": {"epochs": 3, "batch_size": 32, "patience": None}},
        ],
        "evaluate": EVALUATE,
    }
    report, points = _compress(trained_model_version, pattern_npz, recipe, tmp_path / "out")
    assert [p.epoch for p in points] == [0, 1, 2, 3]
    job = _job(trained_model_version, owner, recipe, dataset)
    client.force_login(owner.user)
    url = reverse("jobs-status", args=[job.uuid])
    assert 'data-testid="live-training"' not in client.get(url).content.decode()

    for point in points[:3]:  # two epochs in, one to go
        job.record_training(point.model_dump(mode="json"))
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    live = response.content.decode().split('data-testid="live-training">', 1)[1]
    live = live.split("</div>", 1)[0]
    assert "Step 2, distill:" in live and "epoch 2 of up to 3" in live
    assert f"validation top-1 {points[2].val_metric:.2f}%" in live
    assert 'data-training-chart="live-training-data"' in live
    chart = json.loads(
        live.split('id="live-training-data" type="application/json">')[1].split("<")[0]
    )
    assert chart["labels"] == [0, 1, 2]
    assert chart["loss"] == [None, points[1].train_loss, points[2].train_loss]

    job.record_training(points[3].model_dump(mode="json"))
    _finish(job, report, tmp_path / "out")
    done = client.get(url, HTTP_HX_REQUEST="true")
    assert done.status_code == 286
    body = done.content.decode()
    assert 'data-testid="live-training"' not in body and 'data-testid="training"' in body
