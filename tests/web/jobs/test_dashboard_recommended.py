"""The trade-off chart marks the recommended points: the Pareto front of the jobs at or above
their quality floor; a job below it (Report.recommended false) is drawn apart and never on
the front, however small or fast it is."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from jobs.dashboard import scatter

pytestmark = pytest.mark.django_db


@pytest.fixture
def runs(model_version, report_variant, succeeded_job, base_report):
    """(small, slow), (large, fast), and one smaller and faster than both but below its floor."""
    size = base_report["original"]["size_bytes"]
    p50 = base_report["original"]["latency"]["p50_ms"]
    broken = report_variant(size=size // 8, p50=p50 * 0.3, top1=0.75)
    broken.update(recommended=False, quality_reasons=["output 'logits': 40% of samples broken."])
    return {
        "small": succeeded_job(
            model_version, report_variant(size=size // 4, p50=p50 * 0.9, top1=0.70)
        ),
        "fast": succeeded_job(
            model_version, report_variant(size=size // 2, p50=p50 * 0.5, top1=0.72)
        ),
        "broken": succeeded_job(model_version, broken),
    }


def test_it_marks_the_recommended_front_and_keeps_jobs_below_the_floor_off_it(
    client, owner, model_version, runs
):
    [chart] = scatter(model_version.project)["charts"]
    by_job = {p["job"]: p for p in chart["points"]}
    broken = by_job[str(runs["broken"].uuid)]
    # It dominates both others on all three, yet it is no trade-off to pick: it hides nothing.
    assert broken["recommended"] is False and broken["front"] is False
    recommended = {p["job"] for p in chart["points"] if p["front"]}
    assert recommended == {str(runs["small"].uuid), str(runs["fast"].uuid)}
    assert all(p["recommended"] for p in chart["front"])

    client.force_login(owner.user)
    body = client.get(reverse("registry-project", args=[model_version.project.uuid])).content
    body = body.decode()
    drawn = json.loads(
        body.split('id="pareto-data-0" type="application/json">', 1)[1].split("<")[0]
    )
    assert {p["job"]: p["recommended"] for p in drawn["points"]}[str(runs["broken"].uuid)] is False
    assert "Pareto front: 2 jobs" in body and "Red, not recommended" in body
