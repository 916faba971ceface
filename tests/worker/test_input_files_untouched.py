"""A job reads the stored upload and dataset, never writes them: after a real job that
quantizes the model and converts the original to TFLite (onnx2tf rewrites the file it is
given), every stored input file has the bytes it had before. The CLI's half is
tests/engine/test_input_files_untouched.py."""

from __future__ import annotations

import hashlib

import pytest

from jobrunner.runner import run_job
from jobs.models import Job

pytestmark = pytest.mark.django_db


def stored_hashes(*fields) -> dict[str, str]:
    """sha256 of each stored file, by its storage name."""
    hashes = {}
    for field in fields:
        with field.storage.open(field.name, "rb") as stored:
            hashes[field.name] = hashlib.sha256(stored.read()).hexdigest()
    return hashes


def test_a_job_leaves_the_stored_model_and_dataset_as_they_were(
    trained_model_version, dataset, owner, fast_recipe
):
    from compress_engine import Report

    version = trained_model_version
    inputs = [version.file, dataset.file]
    if version.source_file:  # an upload converted to ONNX at ingest keeps its original
        inputs.append(version.source_file)
    before = stored_hashes(*inputs)
    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        dataset=dataset,
        recipe={
            **fast_recipe,
            "steps": [{"quantize": {"mode": "static-int8", "samples": 32}}],
            "export": ["onnx", "tflite"],
            "tflite": {"precisions": ["fp32"], "converters": ["onnx2tf"]},
            "evaluate": {**fast_recipe["evaluate"], "batch_sizes": []},
        },
        created_by=owner.user,
    )

    run_job(str(job.uuid))

    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    tflite = [a for a in Report.model_validate(job.report).artifacts if a.format == "tflite"]
    assert [a.source for a in tflite] == ["the original model (float32)"]
    version.refresh_from_db()
    dataset.refresh_from_db()
    assert stored_hashes(*inputs) == before
    assert version.sha256 == before[version.file.name]
