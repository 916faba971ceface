"""The results page's latency-by-runtime table, from a real engine run's report."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from compress_engine.device import gpu_available

pytestmark = pytest.mark.django_db


@pytest.mark.skipif(gpu_available(), reason="describes a worker without a GPU")
def test_it_times_the_cpu_and_says_why_there_are_no_gpu_figures(
    client, owner, model_version, succeeded_job, base_report
):
    job = succeeded_job(model_version, base_report)
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    rows = re.findall(r'data-testid="runtime-row" data-status="([a-z ]+)"', page)
    assert rows[:4] == ["ok", "unavailable", "unavailable", "not applicable"]
    assert rows[4:] in ([], ["ok"])  # "CPU, 1 thread" where the 2-thread figure was unstable
    cpu = base_report["runtimes"][0]
    assert cpu["runtime"] == "CPU" and cpu["compressed"] == base_report["result"]["latency"]
    assert "no CUDA device on this worker" in page or "no CUDA provider" in page
    assert "has no QDQ int8 nodes" in page  # dynamic int8 writes none
