"""The downloads table of the results page: one row per exported file, failed exports
included, from the report of a real engine run that asks for ONNX and TFLite files."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db

# No dataset: the full-integer TFLite file cannot be calibrated, so it fails; fp32 is offered.
RECIPE = {
    "version": 1,
    "steps": [{"quantize": {"mode": "dynamic-int8"}}],
    "export": ["onnx", "tflite"],
    "tflite": {"precisions": ["fp32", "int8"]},
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8},
}
OFFERED = {"model.int8.onnx", "model.fp32.tflite"}
FAILED = "model.int8.tflite"


@pytest.fixture(scope="module")
def engine_run(tiny_cnn_onnx, tmp_path_factory):
    """One real run for the module: (report, out_dir). Storing copies the files, so every
    test can store them again for its own job."""
    from compress_engine import compress

    out_dir = tmp_path_factory.mktemp("tflite-run") / "out"
    report = compress(tiny_cnn_onnx, RECIPE, data=None, out_dir=out_dir)
    assert {a.name for a in report.files} == OFFERED, report.artifacts
    return report, out_dir


def _finished_job(version, owner, report, out_dir: Path) -> Job:
    from jobrunner.runner import _store_results

    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        recipe=RECIPE,
        created_by=owner.user,
    )
    assert job.claim(worker="w@test")
    _store_results(job, report, out_dir)
    return job


def _rows(page: str) -> list[str]:
    table = page.split('data-testid="artifacts"', 1)[1].split("</table>", 1)[0]
    return [row.split("</tr>", 1)[0] for row in table.split("<tr ")[1:] if "artifact-row" in row]


def _row(rows: list[str], name: str) -> str:
    (row,) = [row for row in rows if name in row]
    return row


def test_it_lists_every_export_and_shows_why_one_failed_without_a_link(
    client, owner, model_version, engine_run
):
    report, out_dir = engine_run
    job = _finished_job(model_version, owner, report, out_dir)
    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    rows = _rows(page)
    assert len(rows) == len(report.artifacts) == 3
    stored = {a.name: a for a in job.artifacts.all()}
    assert set(stored) == OFFERED
    for name in OFFERED:
        row = _row(rows, name)
        assert 'data-status="ok"' in row
        assert f'href="{reverse("jobs-artifact", args=[stored[name].uuid])}"' in row
        assert stored[name].sha256[:16] in row

    tflite = _row(rows, "model.fp32.tflite")
    info = next(a for a in report.artifacts if a.name == "model.fp32.tflite")
    assert ">tflite</td>" in tflite and ">fp32</td>" in tflite
    assert "input: NHWC" in tflite and "from the original model" in tflite
    assert "made by onnx2tf" in tflite and "input fixed at 1x1x8x8" in tflite
    assert info.check.runtime in tflite and info.check.runtime.startswith("LiteRT")
    assert f"{info.check.cosine_similarity:.6f}" in tflite
    assert f"{info.check.conversion_max_abs_diff:.3g}" in tflite
    assert f"{info.check.latency.p50_ms:.3f} ms" in tflite

    onnx = _row(rows, "model.int8.onnx")
    assert "ONNX Runtime" in onnx and "NHWC" not in onnx

    failed = _row(rows, FAILED)
    failure = next(a for a in report.artifacts if a.name == FAILED).failure
    assert 'data-status="failed"' in failed and "<a " not in failed
    assert "worse-text" in failed and failure in failed and "dataset" in failure
    assert "seeded random inputs" in page  # how the files were checked


def test_it_still_renders_a_report_written_before_exports_could_fail(
    client, owner, model_version, engine_run
):
    report, out_dir = engine_run
    job = _finished_job(model_version, owner, report, out_dir)
    # An older engine's report: ONNX artifacts only, none of the new fields, no `files`.
    old = dict(job.report)
    old.pop("files", None)
    old["artifacts"] = [
        {k: a[k] for k in ("name", "format", "precision", "size_bytes", "sha256")}
        for a in old["artifacts"]
        if a["format"] == "onnx"
    ]
    Job.objects.filter(pk=job.pk).update(report=old)
    Artifact.objects.filter(job=job, format="tflite").delete()

    client.force_login(owner.user)
    response = client.get(reverse("jobs-detail", args=[job.uuid]))
    assert response.status_code == 200
    (row,) = _rows(response.content.decode())
    onnx = job.artifacts.get()
    assert 'data-status="ok"' in row and reverse("jobs-artifact", args=[onnx.uuid]) in row
    assert "–" in row  # no check figures in old reports


def test_it_serves_the_tflite_file_to_the_team_and_404_to_another_team(
    client, member, outsider, model_version, owner, engine_run
):
    report, out_dir = engine_run
    job = _finished_job(model_version, owner, report, out_dir)
    tflite = job.artifacts.get(name="model.fp32.tflite")
    url = reverse("jobs-artifact", args=[tflite.uuid])

    client.force_login(member.user)
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == (out_dir / tflite.name).read_bytes()
    client.force_login(outsider.user)
    assert client.get(url).status_code == 404
    assert client.get(reverse("jobs-bundle", args=[job.uuid])).status_code == 404


def test_the_bundle_holds_only_the_files_the_report_offers(
    client, owner, model_version, engine_run
):
    report, out_dir = engine_run
    job = _finished_job(model_version, owner, report, out_dir)
    # A stray stored row under the failed export's name (e.g. left by an older worker) is
    # neither linked nor bundled: the report decides what is offered.
    stray = Artifact(job=job, name=FAILED, format="tflite", precision="int8", size_bytes=3)
    stray.file.save(FAILED, ContentFile(b"bad"))

    client.force_login(owner.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert reverse("jobs-artifact", args=[stray.uuid]) not in page
    response = client.get(reverse("jobs-bundle", args=[job.uuid]))
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        models = {name for name in zf.namelist() if name.startswith("models/")}
        assert models == {f"models/{name}" for name in OFFERED}
        assert zf.read("models/model.fp32.tflite") == (out_dir / "model.fp32.tflite").read_bytes()
