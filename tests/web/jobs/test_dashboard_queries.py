"""The project dashboard's cost does not grow with the project: a fixed number of queries
however many jobs, versions and datasets it has, no job report (or other wide JSON column)
loaded to draw it, and the same table and scatter as the reports themselves say.

Every team member keeps the dashboard open and reloads it while jobs run, so its cost is
multiplied by every viewer (benchmarks/load measures it under 100 users).
"""

from __future__ import annotations

import json
import random
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conftest import _ingest
from factories import JobFactory
from jobs.dashboard import PAGE_SIZE, pareto_front, scatter

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
# Job columns that hold whole documents; the dashboard reads figures out of the report in SQL.
WIDE_JOB_COLUMNS = ("report", "recipe", "training", "timeline", "log_tail")
WIDE_COLUMN_SELECTED = re.compile(
    r'"jobs_job"\."(?:' + "|".join(WIDE_JOB_COLUMNS) + r')"\s*(?:,|FROM\b)'
)


def _get(client, url: str, **extra):
    response = client.get(url, **extra)
    assert response.status_code == 200
    return response


def _queries(client, url: str, **extra) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        _get(client, url, **extra)
    return [q["sql"] for q in queries.captured_queries]


def _costs(client, project) -> dict[str, int]:
    """Queries per request: the page with its scatter built and from the cache, and the
    table fragment sorted by a date and by a ratio."""
    page = reverse("registry-project", args=[project.uuid])
    fragment = reverse("jobs-project-table", args=[project.uuid])
    cache.clear()
    built = len(_queries(client, page))
    return {
        "page, scatter built": built,
        "page, scatter cached": len(_queries(client, page)),
        "page 2 by accuracy": len(
            _queries(client, page, data={"sort": "accuracy_drop", "page": 2})
        ),
        "fragment": len(_queries(client, fragment, **HX)),
        "fragment by size": len(_queries(client, fragment, data={"sort": "size_ratio"}, **HX)),
        "fragment, failed": len(_queries(client, fragment, data={"status": "failed"}, **HX)),
    }


def _drawn(body: str, index: int = 0) -> dict:
    """One chart's data as the page hands it to the chart (one chart per model version)."""
    marker = f'id="pareto-data-{index}" type="application/json">'
    return json.loads(body.split(marker, 1)[1].split("<")[0])


def _failed(version):
    job = JobFactory(model_version=version)
    assert job.claim(worker="w@test") and job.fail("out of memory")
    return job


@pytest.fixture
def varied_report(report_variant, base_report):
    """A report with its own size, latency, cosine and (when labelled) accuracy, drawn from
    `rng`."""
    size = base_report["original"]["size_bytes"]
    p50 = base_report["original"]["latency"]["p50_ms"]

    def make(rng: random.Random, *, labelled: bool = True) -> dict:
        return report_variant(
            size=int(size * rng.uniform(0.2, 1.0)),
            p50=p50 * rng.uniform(0.3, 1.2),
            top1=rng.uniform(0.5, 0.8) if labelled else None,
            cosine=rng.uniform(0.95, 1.0),
        )

    return make


def test_it_costs_the_same_queries_with_many_more_jobs_versions_and_datasets(
    client, owner, project, model_version, succeeded_job, varied_report, tiny_cnn_onnx, pattern_npz
):
    from registry.services import ingest_dataset_upload, ingest_model_upload

    rng = random.Random(1)
    client.force_login(owner.user)
    # One job of each kind the fragment's status filter finds.
    succeeded_job(model_version, varied_report(rng))
    JobFactory(model_version=model_version)
    _failed(model_version)
    few = _costs(client, project)

    # More than a page of every kind of job, over a second version, and datasets.
    second = _ingest(ingest_model_upload, project, owner, tiny_cnn_onnx)
    for version in (model_version, second):
        for _ in range(PAGE_SIZE // 2 + 1):
            succeeded_job(version, varied_report(rng))
            JobFactory(model_version=version)
        _failed(version)
        running = JobFactory(model_version=version)
        assert running.claim(worker="w@test")
    for _ in range(2):
        _ingest(ingest_dataset_upload, project, owner, pattern_npz)
    assert project.jobs.count() > 2 * PAGE_SIZE

    assert _costs(client, project) == few
    assert few["page, scatter built"] <= 10
    # A cached scatter costs only the query that checks it is current.
    assert few["page, scatter cached"] == few["page, scatter built"] - 1


def test_it_never_loads_a_jobs_report_or_other_documents(
    client, owner, model_version, succeeded_job, varied_report
):
    rng = random.Random(2)
    for _ in range(3):
        succeeded_job(model_version, varied_report(rng))
    JobFactory(model_version=model_version)
    client.force_login(owner.user)
    project = model_version.project
    cache.clear()
    page = reverse("registry-project", args=[project.uuid])
    for url, extra in (
        (page, {}),
        (page + "?sort=-latency_ratio", {}),
        (reverse("jobs-project-table", args=[project.uuid]) + "?sort=accuracy_drop", HX),
    ):
        selected = [
            sql for sql in _queries(client, url, **extra) if WIDE_COLUMN_SELECTED.search(sql)
        ]
        assert selected == []
    rows = list(_get(client, page).context["jobs_table"].page.object_list)
    assert len(rows) == 4
    for job in rows:
        assert set(WIDE_JOB_COLUMNS) <= job.get_deferred_fields()


def test_the_table_and_the_scatter_show_what_the_reports_say(
    client, owner, model_version, succeeded_job, varied_report
):
    from compress_engine import Report

    rng = random.Random(3)
    jobs = [succeeded_job(model_version, varied_report(rng)) for _ in range(6)]
    client.force_login(owner.user)
    body = _get(client, reverse("registry-project", args=[model_version.project.uuid]))
    body = body.content.decode()

    reports = {str(j.uuid): Report.model_validate(j.report) for j in jobs}
    for uuid, report in reports.items():
        row = body.split(f'data-job="{uuid}"', 1)[1].split("</tr>", 1)[0]
        assert f"{report.size_ratio:.3f}×" in row and f"{report.latency_ratio:.3f}×" in row
        assert f"{report.accuracy.drop_points:.2f} pt" in row
        assert f"{model_version.name} v{model_version.version}" in row

    drawn = _drawn(body)
    assert drawn["metric"] == "accuracy"
    points = {p["job"]: p for p in drawn["points"]}
    assert set(points) == set(reports)
    for uuid, report in reports.items():
        point = points[uuid]
        assert point["size_ratio"] == round(report.size_ratio, 4)
        assert point["latency_ratio"] == round(report.latency_ratio, 4)
        assert point["metric"] == round(100 * report.accuracy.result_top1, 6)
        assert point["url"] == reverse("jobs-detail", args=[uuid])
        title = f"{model_version.name} v{model_version.version} · Fast int8 (dynamic)"
        assert point["label"] == title
    expected_front = pareto_front(
        [(p["latency_ratio"], p["size_ratio"], -p["metric"]) for p in (points[u] for u in reports)]
    )
    assert [points[u]["front"] for u in reports] == expected_front


def test_the_cached_scatter_follows_each_job_that_succeeds(
    client, owner, model_version, succeeded_job, varied_report
):
    rng = random.Random(4)
    project = model_version.project
    succeeded_job(model_version, varied_report(rng))
    first = scatter(project)
    assert scatter(project) == first and len(first["charts"][0]["points"]) == 1

    running = JobFactory(model_version=model_version)
    assert running.claim(worker="w@test")
    assert scatter(project) == first  # a job that has not succeeded changes nothing
    assert running.succeed(varied_report(rng))
    drawn_jobs = {p["job"] for p in scatter(project)["charts"][0]["points"]}
    assert drawn_jobs == {first["charts"][0]["points"][0]["job"], str(running.uuid)}

    # A job without labels turns that model's chart to fidelity, and it says so.
    succeeded_job(model_version, varied_report(rng, labelled=False))
    client.force_login(owner.user)
    body = _get(client, reverse("registry-project", args=[project.uuid])).content.decode()
    drawn = _drawn(body)
    assert drawn["metric"] == "cosine" and len(drawn["points"]) == 3


def test_the_dashboard_still_draws_its_scatter_while_the_cache_is_down(
    client, owner, model_version, succeeded_job, varied_report, settings
):
    job = succeeded_job(model_version, varied_report(random.Random(5)))
    # Nothing listens on port 1: every cache call fails as it would with Redis down (Django's
    # setting_changed handler gives the new CACHES fresh connections).
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    client.force_login(owner.user)
    body = _get(client, reverse("registry-project", args=[model_version.project.uuid]))
    assert [p["job"] for p in _drawn(body.content.decode())["points"]] == [str(job.uuid)]


def _front_by_definition(points: list[tuple[float, ...]]) -> list[bool]:
    """Every point against every other (what pareto_front did before it sorted)."""

    def dominates(a, b) -> bool:
        pairs = list(zip(a, b, strict=True))
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return [
        not any(dominates(other, p) for j, other in enumerate(points) if j != i)
        for i, p in enumerate(points)
    ]


@pytest.mark.parametrize("seed", range(20))
def test_the_pareto_front_matches_its_definition(seed):
    rng = random.Random(seed)
    # Few distinct values, so ties and repeated points (reruns of a recipe) are common.
    points = [tuple(float(rng.randint(0, 6)) for _ in range(3)) for _ in range(rng.randint(0, 60))]
    points += rng.sample(points, min(5, len(points)))
    assert pareto_front(points) == _front_by_definition(points)
