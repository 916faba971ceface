"""/jobs/compare/?jobs=…: 2 to 4 jobs of the user's teams side by side, best value marked."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from factories import JobFactory
from jobs.compare import compare_rows
from jobs.models import Artifact

pytestmark = pytest.mark.django_db


def _url(*jobs) -> str:
    return reverse("jobs-compare") + "?" + "&".join(f"jobs={j.uuid}" for j in jobs)


def _row(page: str, label: str) -> list[tuple[str, bool]]:
    """(text, best) of each cell of the row labelled `label`."""
    row = re.search(
        rf'<tr data-testid="compare-row">\s*<th scope="row">{re.escape(label)}</th>(.*?)</tr>',
        page,
        re.S,
    )
    assert row, label
    cells = re.findall(r'<td class="nowrap( best| tie)?"[^>]*>([^<]*)', row.group(1))
    return [(text.strip(), best == " best") for best, text in cells]


@pytest.fixture
def pair(model_version, report_variant, succeeded_job, base_report):
    size = base_report["original"]["size_bytes"]
    p50 = base_report["original"]["latency"]["p50_ms"]
    # 15 points apart on 200 scored samples: beyond the standard error.
    small = succeeded_job(model_version, report_variant(size=size // 4, p50=p50, top1=0.60))
    fast = succeeded_job(model_version, report_variant(size=size // 2, p50=p50 / 2, top1=0.75))
    artifact = Artifact(job=small, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    return small, fast


def test_it_puts_two_jobs_side_by_side_and_marks_the_best_of_each_row(client, owner, pair):
    small, fast = pair
    client.force_login(owner.user)
    response = client.get(_url(small, fast))
    page = response.content.decode()
    assert response.status_code == 200
    assert page.count('data-testid="compare-column"') == 2
    assert [best for _, best in _row(page, "File size")] == [True, False]
    assert [best for _, best in _row(page, "p50, batch 1")] == [False, True]
    assert [best for _, best in _row(page, "Top-1 accuracy")] == [False, True]
    assert [text for text, _ in _row(page, "Top-1 accuracy")] == ["60.00%", "75.00%"]
    # Same figure in both: nothing to pick.
    assert [best for _, best in _row(page, "Parameters")] == [False, False]
    for label in ("MACs (batch 1)", "Sparsity", "Throughput, batch 1", "p90, batch 1",
                  "p99, batch 1", "Fidelity cosine", "Max abs error"):  # fmt: skip
        assert _row(page, label)
    # Recipes side by side, and each job's files.
    assert page.count("mode: dynamic-int8") == 2
    assert reverse("jobs-artifact", args=[small.artifacts.get().uuid]) in page


def test_it_marks_best_values_by_direction(report_variant, base_report):
    from compress_engine import Report

    p50 = base_report["original"]["latency"]["p50_ms"]
    labelled = Report.model_validate(report_variant(size=5000, p50=p50, top1=0.9, cosine=0.98))
    unlabelled = Report.model_validate(
        report_variant(size=4000, p50=p50 * 2, top1=None, cosine=0.99)
    )
    rows = {r.label: r for r in compare_rows([labelled, unlabelled, None])}
    assert [(c.text, c.best) for c in rows["File size"].cells] == [
        ("4.9\xa0KB", False),
        ("3.9\xa0KB", True),  # smaller is better
        ("–", False),  # no report yet
    ]
    assert [c.best for c in rows["p50, batch 1"].cells] == [True, False, False]  # faster
    assert [c.best for c in rows["Fidelity cosine"].cells] == [False, True, False]  # higher
    # Only one job has accuracy: no "best" among one.
    assert [c.best for c in rows["Top-1 accuracy"].cells] == [False, False, False]


def test_it_shows_a_job_without_a_report_as_dashes(client, owner, model_version, pair):
    running = JobFactory(model_version=model_version)
    running.claim(worker="w")
    client.force_login(owner.user)
    page = client.get(_url(pair[0], running)).content.decode()
    assert [text for text, _ in _row(page, "File size")][1] == "–"


@pytest.mark.parametrize("count", [0, 1, 5])
def test_it_explains_that_it_compares_two_to_four_jobs(
    client, owner, model_version, report_variant, succeeded_job, base_report, count
):
    jobs = [JobFactory(model_version=model_version) for _ in range(count)]
    client.force_login(owner.user)
    response = client.get(_url(*jobs))
    assert response.status_code == 400
    assert "Pick 2 to 4 jobs to compare" in response.content.decode()


def test_it_counts_a_job_named_twice_once(client, owner, pair):
    client.force_login(owner.user)
    response = client.get(_url(pair[0], pair[0]))
    assert response.status_code == 400 and "1 was given" in response.content.decode()


def test_it_lets_viewers_compare(client, viewer, pair):
    client.force_login(viewer.user)
    assert client.get(_url(*pair)).status_code == 200


def test_it_is_a_404_when_any_job_is_outside_the_users_teams(client, outsider, owner, pair):
    from registry.services import ingest_model_upload

    small, _fast = pair
    # The outsider's own job, beside one of `team`'s: the whole comparison is a 404.
    theirs = JobFactory(model_version=_outsider_version(outsider, ingest_model_upload, small))
    client.force_login(outsider.user)
    assert client.get(_url(theirs, small)).status_code == 404
    assert client.get(_url(*pair)).status_code == 404
    client.force_login(owner.user)
    assert client.get(_url(small, theirs)).status_code == 404


def test_it_is_a_404_for_an_unknown_or_malformed_id(client, owner, pair):
    client.force_login(owner.user)
    assert client.get(f"{_url(*pair)}&jobs={uuid.uuid4()}").status_code == 404
    assert client.get(f"{_url(*pair)}&jobs=not-a-uuid").status_code == 404


def _outsider_version(outsider, ingest, like):
    """A model version in the outsider's own team (same file as `like`'s)."""
    from conftest import _temporary_upload
    from factories import ProjectFactory

    team = outsider.user.memberships.get().team
    project = ProjectFactory(team=team)
    upload = _temporary_upload(_path_of(like.model_version))
    try:
        return ingest(project=project, user=outsider.user, upload=upload)
    finally:
        upload.close()


def _path_of(version):
    from pathlib import Path

    return Path(version.file.path)


def _tie_report(report_variant, base_report, *, p50: float, p90: float, top1: float) -> Any:
    from compress_engine import Report

    data = report_variant(size=5000, p50=p50, top1=top1)
    for latency in [data["result"]["latency"], *data["result"]["latency_by_batch"].values()]:
        latency["p90_ms"] = p90
        latency["p99_ms"] = p90 * 1.5
    return Report.model_validate(data)


def test_it_marks_differences_inside_the_measured_noise_as_ties(report_variant, base_report):
    """Before, 1.00 ms against 1.02 ms with runs spread over 0.2 ms was "best", and so was
    75.5% against 75.0% on 200 samples."""
    a = _tie_report(report_variant, base_report, p50=1.00, p90=1.20, top1=0.755)
    b = _tie_report(report_variant, base_report, p50=1.02, p90=1.25, top1=0.750)
    rows = {r.label: r for r in compare_rows([a, b])}
    p50 = rows["p50, batch 1"].cells
    assert [(c.best, c.tie) for c in p50] == [(False, True), (False, True)]
    assert "p50–p90 spread" in p50[0].noise and "0.200 ms" in p50[0].noise
    top1 = rows["Top-1 accuracy"].cells
    assert [(c.best, c.tie) for c in top1] == [(False, True), (False, True)]
    assert "standard error" in top1[0].noise
    # Sizes are exact: equal sizes are no tie and no best.
    assert [(c.best, c.tie) for c in rows["File size"].cells] == [(False, False), (False, False)]


def test_a_difference_beyond_the_noise_is_still_best(report_variant, base_report):
    a = _tie_report(report_variant, base_report, p50=1.0, p90=1.05, top1=0.90)
    b = _tie_report(report_variant, base_report, p50=2.0, p90=2.10, top1=0.60)
    c = _tie_report(report_variant, base_report, p50=1.02, p90=1.08, top1=0.62)
    rows = {r.label: r for r in compare_rows([a, b, c])}
    # a and c tie for the fastest; b is slower beyond the noise and is neither.
    assert [(x.best, x.tie) for x in rows["p50, batch 1"].cells] == [
        (False, True),
        (False, False),
        (False, True),
    ]
    assert [x.best for x in rows["Top-1 accuracy"].cells] == [True, False, False]


def test_the_compare_page_names_jobs_and_shows_ties(client, owner, model_version, pair):
    small, fast = pair
    client.force_login(owner.user)
    page = client.get(_url(small, fast)).content.decode()
    titles = re.findall(r'data-testid="compare-title">([^<]+)<', page)
    assert titles == ["tiny_cnn v1 · Fast int8 (dynamic)"] * 2
    assert str(small.uuid)[:8] not in re.sub(r'href="[^"]*"|value="[^"]*"', "", page)
    assert "measurement noise" in page
