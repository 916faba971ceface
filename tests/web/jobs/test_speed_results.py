"""The results page says every speed change with its noise band, claims none inside it, and
names the shape latency was timed at."""

from __future__ import annotations

import copy
import html

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _page(client, owner, model_version, succeeded_job, report) -> str:
    job = succeeded_job(model_version, report)
    client.force_login(owner.user)
    return html.unescape(client.get(reverse("jobs-detail", args=[job.uuid])).content.decode())


def _with_band(report: dict, *, low: float, high: float) -> dict:
    """`report` with this band at every batch size (and no runtime rows or notes, which
    carry the real run's own timing: a 1-thread retiming note, say)."""
    report = copy.deepcopy(report)
    report["runtimes"] = []
    report["notes"] = []
    noise = max(0.02, high - 1, 1 / low - 1)
    report["latency_noise_by_batch"] = {
        b: {"low": low, "high": high, "noise": noise, "blocks": 5, "rounds": 50}
        for b in report["original"]["latency_by_batch"]
    }
    return report


def test_a_gain_inside_the_band_is_shown_as_no_measurable_change(
    client, owner, model_version, succeeded_job, base_report, report_variant
):
    p50 = base_report["original"]["latency"]["p50_ms"] / 1.2
    report = _with_band(report_variant(size=1000, p50=p50, top1=None), low=0.75, high=1.3)

    page = _page(client, owner, model_version, succeeded_job, report)

    assert "no measurable speed change (1.20×, noise ±33%)" in page
    assert "× faster" not in page
    assert 'data-testid="timed-shapes"' in page and "fixed by the model" in page


def test_a_gain_beyond_the_band_is_claimed_with_it(
    client, owner, model_version, succeeded_job, base_report, report_variant
):
    p50 = base_report["original"]["latency"]["p50_ms"] / 1.5
    report = _with_band(report_variant(size=1000, p50=p50, top1=None), low=0.97, high=1.04)

    page = _page(client, owner, model_version, succeeded_job, report)

    assert "1.50× faster (noise ±4%)" in page
