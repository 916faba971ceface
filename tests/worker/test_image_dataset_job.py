"""run_job with an image-folder dataset: the worker fetches the stored zip as a .zip, the
engine decodes it for the model's input, calibrates static int8 on its calibration split and
scores accuracy on its evaluation split."""

from __future__ import annotations

import numpy as np
import pytest

from jobrunner.runner import run_job
from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def digits_cnn_version(project, owner, image_folder_dataset, tmp_path):
    """A conv-BN CNN trained on the digits the zip does not hold, with its inputs normalised
    by the zip's recorded statistics (what the job form fills into the recipe)."""
    from sklearn.datasets import load_digits

    from conftest import _ingest
    from model_builders import export_digits_teacher
    from registry.services import ingest_model_upload

    digits = load_digits()
    held_out = np.zeros(len(digits.target), dtype=bool)
    for d in range(10):  # image_folder_dataset holds the first 30 of each digit
        held_out[np.flatnonzero(digits.target == d)[:30]] = True
    [mean], [std] = image_folder_dataset.image_normalisation(1)
    pixels = np.round(digits.images / 16.0 * 255.0) / 255.0
    x = ((pixels[~held_out] - mean) / std)[:, None].astype(np.float32)
    y = digits.target[~held_out].astype(np.int64)
    path = export_digits_teacher(tmp_path / "digits_cnn.onnx", x, y, epochs=6)
    return _ingest(ingest_model_upload, project, owner, path)


def test_it_runs_static_int8_on_an_image_folder_dataset_and_reports_accuracy(
    digits_cnn_version, image_folder_dataset, owner, client
):
    from django.urls import reverse

    from compress_engine import Recipe, Report
    from jobs.recipe_yaml import with_evaluate, with_split

    version, dataset = digits_cnn_version, image_folder_dataset
    recipe = (
        "version: 1\nsteps:\n  - quantize: {mode: static-int8, samples: 64}\n"
        "evaluate: {latency_runs: 5, warmup: 1, batch_sizes: []}\n"
    )
    # As the job form writes it: the model's own mean/std (the statistics it was trained
    # with), then a 40/60 split with seed 3.
    [mean], [std] = dataset.image_normalisation(1)
    recipe = with_split(
        with_evaluate(recipe, {"image_mean": [mean], "image_std": [std]}).yaml,
        {"split-calibration_fraction": "0.4", "split-seed": "3"},
    ).yaml
    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        dataset=dataset,
        recipe=Recipe.parse(recipe).model_dump(mode="json"),
        created_by=owner.user,
    )

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    report = Report.model_validate(job.report)
    assert report.data.samples == 300 and report.data.labels and report.data.seed == 3
    assert (report.data.calibration_samples, report.data.evaluation_samples) == (120, 180)
    assert report.data.classes == [str(d) for d in range(10)]
    assert "300 images in 10 class folders" in report.data.preprocessing
    assert "resized to 8x8" in report.data.preprocessing and "NCHW" in report.data.preprocessing
    assert report.quantization.mode == "static-int8" and report.quantization.calibration
    assert report.accuracy.samples == 180
    # Held-out digits, decoded from PNG and normalised as in training: the float model is
    # accurate, and int8 calibrated on the zip's images keeps it.
    assert report.accuracy.original_top1 > 0.85, report.accuracy
    assert abs(report.accuracy.drop_points) < 4.0, report.accuracy

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert 'data-testid="accuracy"' in page and "evaluation split" in page
