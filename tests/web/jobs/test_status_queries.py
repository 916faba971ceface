"""Polling a job's status costs a fixed number of queries, however much the team has.

Every open live page polls its status fragment every 2 s, so its cost is multiplied by every
watcher: it must not grow with the team's jobs, artifacts, log lines or stages.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from factories import JobFactory
from jobs.live import stage_plan

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def _running(version, owner):
    job = JobFactory(model_version=version, created_by=owner.user)
    assert job.claim(worker="w@test")
    step = stage_plan(job.recipe_obj)[2]
    job.note_progress("Dynamic int8", (step.lo + step.hi) / 2)
    return job


def _status_queries(client, job) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("jobs-status", args=[job.uuid]), **HX)
    assert response.status_code in (200, 286)
    return len(queries)


def test_a_running_jobs_status_costs_the_same_with_many_other_jobs(
    client, owner, model_version, succeeded_job, base_report
):
    client.force_login(owner.user)
    job = _running(model_version, owner)
    _status_queries(client, job)  # the session's first request loads what later ones reuse
    alone = _status_queries(client, job)

    for _ in range(15):
        succeeded_job(model_version, base_report)
        JobFactory(model_version=model_version, created_by=owner.user)
    for i in range(40):
        job.note_progress(f"Dynamic int8 ({i})", stage_plan(job.recipe_obj)[2].hi - 0.001)

    assert _status_queries(client, job) == alone
    assert alone <= 8


def test_a_finished_jobs_last_poll_costs_a_fixed_number_of_queries(
    client, owner, model_version, succeeded_job, base_report
):
    client.force_login(owner.user)
    first = succeeded_job(model_version, base_report)
    _status_queries(client, first)
    one = _status_queries(client, first)

    for _ in range(10):
        succeeded_job(model_version, base_report)
    later = succeeded_job(model_version, base_report)

    assert _status_queries(client, later) == one
