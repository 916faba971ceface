"""The project dashboard: jobs table (status filter, sorting, 25 per page, htmx swaps with
real links), the trade-off scatter and its Pareto front."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from factories import JobFactory
from jobs.dashboard import PAGE_SIZE, pareto_front, scatter

pytestmark = pytest.mark.django_db


def _rows(page: str) -> list[str]:
    return re.findall(r'data-testid="job-row" data-job="([^"]+)"', page)


# --- the Pareto front ----------------------------------------------------------------------


def test_it_keeps_only_undominated_points_on_the_front():
    # (latency ratio, size ratio, -accuracy): all minimised.
    points = [
        (0.5, 0.3, -90.0),  # fast and small
        (0.9, 0.9, -95.0),  # the most accurate
        (0.6, 0.4, -89.0),  # worse than the first on all three
        (0.5, 0.3, -90.0),  # a tie with the first: neither dominates
        (0.4, 0.8, -80.0),  # the fastest
    ]
    assert pareto_front(points) == [True, True, False, True, True]


def test_it_needs_a_strict_improvement_to_dominate():
    assert pareto_front([(1.0, 1.0), (1.0, 2.0)]) == [True, False]
    assert pareto_front([(1.0,)]) == [True] and pareto_front([]) == []


# --- the table -----------------------------------------------------------------------------


@pytest.fixture
def three_runs(model_version, report_variant, succeeded_job, base_report):
    """Three succeeded jobs: (small, slow), (large, fast), (dominated)."""
    original = base_report["original"]["size_bytes"]
    p50 = base_report["original"]["latency"]["p50_ms"]
    return {
        "small": succeeded_job(
            model_version, report_variant(size=original // 4, p50=p50 * 0.9, top1=0.70)
        ),
        "fast": succeeded_job(
            model_version, report_variant(size=original // 2, p50=p50 * 0.5, top1=0.72)
        ),
        "dominated": succeeded_job(
            model_version, report_variant(size=original // 2, p50=p50 * 0.95, top1=0.60)
        ),
    }


def test_it_filters_the_jobs_by_status(client, owner, model_version, three_runs):
    failed = JobFactory(model_version=model_version)
    failed.claim(worker="w")
    failed.fail("no")
    client.force_login(owner.user)
    url = reverse("registry-project", args=[model_version.project.uuid])
    assert len(_rows(client.get(url).content.decode())) == 4
    page = client.get(url, {"status": "failed"}).content.decode()
    assert _rows(page) == [str(failed.uuid)]
    assert '<option value="failed" selected>' in page
    assert "No cancelled jobs." in client.get(url, {"status": "cancelled"}).content.decode()


def test_it_sorts_by_size_latency_and_accuracy_with_unfinished_jobs_last(
    client, owner, model_version, three_runs
):
    queued = JobFactory(model_version=model_version)
    client.force_login(owner.user)
    url = reverse("registry-project", args=[model_version.project.uuid])

    def order(sort: str) -> list[str]:
        uuids = _rows(client.get(url, {"sort": sort}).content.decode())
        names = {str(j.uuid): name for name, j in three_runs.items()} | {str(queued.uuid): "q"}
        return [names[u] for u in uuids]

    assert order("size_ratio")[0] == "small" and order("size_ratio")[-1] == "q"
    assert order("latency_ratio") == ["fast", "small", "dominated", "q"]
    assert order("-latency_ratio") == ["dominated", "small", "fast", "q"]
    assert order("accuracy_drop") == ["fast", "small", "dominated", "q"]
    assert order("created") == ["small", "fast", "dominated", "q"]
    assert order("-created") == ["q", "dominated", "fast", "small"]
    # The active column links to its reverse order; the link is a real URL.
    page = client.get(url, {"sort": "latency_ratio"}).content.decode()
    assert re.search(r'href="[^"]*\?sort=-latency_ratio"[^>]*class="sort-asc"', page)


def test_it_pages_25_jobs_at_a_time(client, owner, model_version):
    for _ in range(PAGE_SIZE + 5):
        JobFactory(model_version=model_version)
    client.force_login(owner.user)
    url = reverse("registry-project", args=[model_version.project.uuid])
    first = client.get(url).content.decode()
    assert len(_rows(first)) == PAGE_SIZE and "Page 1 of 2 (30 jobs)" in first
    second = client.get(url, {"page": 2}).content.decode()
    assert len(_rows(second)) == 5 and not set(_rows(first)) & set(_rows(second))
    assert f'href="{url}?page=2"' in first


def test_it_swaps_only_the_table_with_htmx_and_pushes_the_real_address(
    client, owner, model_version, three_runs
):
    client.force_login(owner.user)
    project = model_version.project
    fragment = reverse("jobs-project-table", args=[project.uuid])
    response = client.get(fragment, {"sort": "size_ratio"}, HTTP_HX_REQUEST="true")
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<section id="project-jobs"') and "<html" not in body
    page_url = reverse("registry-project", args=[project.uuid])
    assert response["HX-Push-Url"] == f"{page_url}?sort=size_ratio"
    # Sort and page links carry both: the page for a real click, the fragment for htmx.
    assert f'hx-get="{fragment}?sort=-size_ratio"' in body
    # Without htmx, the fragment address sends the browser to the page itself.
    plain = client.get(fragment, {"status": "succeeded"})
    assert plain.status_code == 302 and plain["Location"] == f"{page_url}?status=succeeded"


def test_it_draws_the_tradeoffs_with_the_pareto_front(client, owner, model_version, three_runs):
    data = scatter(model_version.project)
    assert data is not None and len(data["charts"]) == 1
    chart = data["charts"][0]
    assert chart["metric"] == "accuracy" and chart["version"] == "tiny_cnn v1"
    assert chart["metric_label"] == "Accuracy: top-1 on labelled data (%)"
    front = {p["job"] for p in chart["points"] if p["front"]}
    assert front == {str(three_runs["small"].uuid), str(three_runs["fast"].uuid)}
    client.force_login(owner.user)
    page = client.get(reverse("registry-project", args=[model_version.project.uuid]))
    body = page.content.decode()
    assert 'data-pareto-chart="pareto-data-0"' in body and "chartjs/chart.umd.min.js" in body
    drawn = body.split('id="pareto-data-0" type="application/json">', 1)[1].split("<")[0]
    assert len(json.loads(drawn)["points"]) == 3 and "Pareto front: 2 jobs" in body


def test_it_says_it_plots_fidelity_when_a_job_had_no_labels(
    client, owner, model_version, report_variant, succeeded_job, base_report
):
    size = base_report["original"]["size_bytes"]
    p50 = base_report["original"]["latency"]["p50_ms"]
    succeeded_job(model_version, report_variant(size=size // 4, p50=p50, top1=0.7, cosine=0.99))
    succeeded_job(model_version, report_variant(size=size // 4, p50=p50, top1=None, cosine=0.9))
    [chart] = scatter(model_version.project)["charts"]
    assert chart["metric"] == "cosine"
    assert chart["metric_label"] == "Fidelity: cosine similarity to the original (not accuracy)"
    assert "1 of 2 jobs ran without labelled data" in chart["note"]
    assert sorted(p["metric"] for p in chart["points"]) == [0.9, 0.99]
    assert [p["metric"] for p in chart["points"] if p["front"]] == [0.99]
    client.force_login(owner.user)
    body = client.get(reverse("registry-project", args=[model_version.project.uuid]))
    axis = re.search(r'data-testid="tradeoff-axis">(.+?)</p>', body.content.decode())[1]
    assert "Fidelity: cosine similarity to the original (not accuracy)" in axis
    assert "1 of 2 jobs ran without labelled data" in axis


def test_it_draws_one_chart_per_model_version(
    client, owner, project, model_version, report_variant, succeeded_job, base_report,
    tiny_mlp_onnx,
):  # fmt: skip
    """Ratios against different originals do not compare, and one model's unlabelled job
    does not turn another model's chart to cosine."""
    from conftest import _ingest
    from registry.services import ingest_model_upload

    mlp = _ingest(ingest_model_upload, project, owner, tiny_mlp_onnx)
    size = base_report["original"]["size_bytes"]
    p50 = base_report["original"]["latency"]["p50_ms"]
    succeeded_job(model_version, report_variant(size=size // 4, p50=p50, top1=0.7))
    succeeded_job(model_version, report_variant(size=size // 2, p50=p50 / 2, top1=0.8))
    succeeded_job(mlp, report_variant(size=size // 4, p50=p50, top1=None, cosine=0.95))
    charts = {c["version"]: c for c in scatter(project)["charts"]}
    assert set(charts) == {"tiny_cnn v1", "tiny_mlp v1"}
    assert charts["tiny_cnn v1"]["metric"] == "accuracy"
    assert len(charts["tiny_cnn v1"]["points"]) == 2
    assert charts["tiny_mlp v1"]["metric"] == "cosine"
    assert [p["metric"] for p in charts["tiny_mlp v1"]["points"]] == [0.95]
    client.force_login(owner.user)
    body = client.get(reverse("registry-project", args=[project.uuid])).content.decode()
    assert body.count('data-testid="tradeoff-chart"') == 2


def test_it_has_no_scatter_without_a_succeeded_job(client, owner, model_version):
    JobFactory(model_version=model_version)
    assert scatter(model_version.project) is None
    client.force_login(owner.user)
    body = client.get(reverse("registry-project", args=[model_version.project.uuid])).content
    assert b"data-pareto-chart" not in body and b'data-testid="jobs-table"' in body


def test_it_offers_checkboxes_and_a_compare_button(client, viewer, model_version, three_runs):
    client.force_login(viewer.user)  # reading and comparing is for every member
    body = client.get(reverse("registry-project", args=[model_version.project.uuid]))
    body = body.content.decode()
    assert f'action="{reverse("jobs-compare")}"' in body
    for job in three_runs.values():
        assert f'name="jobs" value="{job.uuid}"' in body
    assert 'data-testid="compare-button"' in body


def test_it_hides_the_dashboard_from_outsiders(client, outsider, model_version, three_runs):
    client.force_login(outsider.user)
    project = model_version.project
    assert client.get(reverse("registry-project", args=[project.uuid])).status_code == 404
    fragment = reverse("jobs-project-table", args=[project.uuid])
    assert client.get(fragment, HTTP_HX_REQUEST="true").status_code == 404
