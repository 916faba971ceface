"""The results page and the compare page say when a result is below the quality floor, in
red, and show each output's task-aware agreement. Reports come from real engine runs: a model
whose second head int8 destroys, a CNN+sequence recogniser and a dense-map detector."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db

EVALUATE = {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 16}


def _run(model, mode: str, out, data=None) -> dict[str, Any]:
    from compress_engine import compress

    recipe = {"steps": [{"quantize": {"mode": mode}}], "evaluate": EVALUATE}
    return compress(model, recipe, data=data, out_dir=out).model_dump(mode="json")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, dict[str, Any]]:
    import third_party_models as tpm
    from quality_models import export_two_heads

    d = tmp_path_factory.mktemp("quality-web")
    return {
        "broken": _run(export_two_heads(d / "two_heads.onnx"), "dynamic-int8", d / "broken"),
        "sequence": _run(
            tpm.cnn_sequence_model(d),
            "static-int8",
            d / "seq",
            tpm.digit_strips_npz(d / "strips.npz", n=32),
        ),
        "map": _run(
            tpm.dense_map_detector(d), "static-int8", d / "map", tpm.blobs_npz(d / "b.npz", n=32)
        ),
    }


def _page(client, owner, job) -> str:
    client.force_login(owner.user)
    return client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()


def test_it_shows_a_result_below_the_floor_as_not_recommended_in_red(
    client, owner, model_version, succeeded_job, reports
):
    report = reports["broken"]
    assert report["recommended"] is False
    job = succeeded_job(model_version, report)

    page = _page(client, owner, job)

    banner = page.split('data-testid="not-recommended"', 1)[1].split("</div>", 1)[0]
    assert 'class="message message-error worse-text"' in page
    assert "Not recommended." in banner
    assert "&#x27;aux_scores&#x27;: top-1 agreement" in banner  # each reason, escaped
    assert 'data-testid="not-recommended-badge"' in page
    assert 'data-testid="quality-floor"' in page and "not met" in page
    # The files are still offered.
    assert 'data-testid="artifacts"' in page


def test_a_result_above_the_floor_carries_no_warning(
    client, owner, model_version, succeeded_job, base_report
):
    assert base_report["recommended"] is True
    page = _page(client, owner, succeeded_job(model_version, base_report))
    assert 'data-testid="not-recommended' not in page
    assert "Top-1 agreement" in page  # the classifier's own agreement


def test_it_shows_the_task_agreement_of_a_sequence_and_a_dense_map(
    client, owner, model_version, succeeded_job, reports
):
    sequence = _page(client, owner, succeeded_job(model_version, reports["sequence"]))
    assert 'data-kind="sequence" data-metric="step_agreement"' in sequence
    assert "Per-step argmax agreement" in sequence
    assert 'data-testid="sequence-match"' in sequence

    dense = _page(client, owner, succeeded_job(model_version, reports["map"]))
    assert 'data-kind="dense-map" data-metric="map_iou"' in dense
    assert "IoU of maps thresholded at 0.5" in dense
    assert "of the range" in dense


def test_the_compare_page_marks_a_result_not_recommended(
    client, owner, model_version, succeeded_job, reports, base_report
):
    broken = succeeded_job(model_version, reports["broken"])
    fine = succeeded_job(model_version, base_report)
    client.force_login(owner.user)
    url = reverse("jobs-compare") + f"?jobs={broken.uuid}&jobs={fine.uuid}"

    page = client.get(url).content.decode()

    assert page.count('data-testid="compare-not-recommended"') == 1


def test_the_project_jobs_table_marks_a_result_not_recommended(
    client, owner, model_version, succeeded_job, reports, base_report
):
    broken = succeeded_job(model_version, reports["broken"])
    fine = succeeded_job(model_version, base_report)
    client.force_login(owner.user)

    page = client.get(reverse("registry-project", args=[model_version.project.uuid]))
    rows = page.content.decode().split('data-testid="job-row"')[1:]

    marked = [r for r in rows if 'data-testid="row-not-recommended"' in r.split("</tr>", 1)[0]]
    assert len(marked) == 1 and str(broken.uuid) in marked[0]
    assert not any(str(fine.uuid) in r for r in marked)
