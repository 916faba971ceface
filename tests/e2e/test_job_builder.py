"""The step builder in a real browser: compose prune + distill + quantize from the schema's
fields, see a bad value refused before submission, run the job on a real worker, then compare
it with a second job from the project dashboard."""

from __future__ import annotations

import re

import pytest

from e2e.test_compress_flow import _project_with_dataset_and_model, _shot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DATASET = "patterns (400 samples, labelled)"


def _set_field(page, selector: str, value: str) -> None:
    """Type a value and leave the field: its change event sends the builder to the server."""
    page.fill(selector, value)
    page.press(selector, "Tab")


def test_it_composes_prune_distill_quantize_runs_it_and_compares_two_jobs(
    live_server, worker, page, tiny_cnn_onnx, pattern_npz
):
    from playwright.sync_api import expect

    _project_with_dataset_and_model(
        page, live_server, "hopper", "Builder", pattern_npz, tiny_cnn_onnx
    )
    page.evaluate("window.__noReload = true")  # survives only htmx swaps, not page loads
    page.select_option("#job-dataset", label=DATASET)
    steps = page.get_by_test_id("builder-step")
    recipe = page.locator("#job-recipe")
    expect(steps).to_have_count(1)  # the engine's suggestion for a CNN with data: static int8
    expect(steps.nth(0)).to_have_attribute("data-technique", "quantize:static-int8")
    page.select_option("#job-preset", "fast-int8")
    expect(steps.nth(0)).to_have_attribute("data-technique", "quantize:dynamic-int8")

    # Prune and distill go before the quantize step, whatever order they are added in.
    page.select_option("#add-technique", "prune")
    page.get_by_test_id("add-step").click()
    expect(steps).to_have_count(2)
    page.select_option("#add-technique", "distill")
    page.get_by_test_id("add-step").click()
    expect(steps).to_have_count(3)
    expect(steps.nth(0)).to_have_attribute("data-technique", "prune")
    expect(steps.nth(1)).to_have_attribute("data-technique", "distill")
    expect(steps.nth(2)).to_have_attribute("data-technique", "quantize:dynamic-int8")
    expect(recipe).to_have_value(re.compile(r"prune:[\s\S]*distill:[\s\S]*quantize:"))

    # A value outside the schema's bounds is marked at its field and blocks the start.
    _set_field(page, "#step-0-amount", "2")
    amount = page.locator('[data-field="amount"]').first
    expect(amount.get_by_test_id("field-error")).to_contain_text("less than or equal to 0.95")
    expect(page.get_by_test_id("start-job")).to_be_disabled()
    _shot(page, "08-builder-field-error")
    _set_field(page, "#step-0-amount", "0.5")
    expect(page.get_by_test_id("field-error")).to_have_count(0)
    expect(page.get_by_test_id("start-job")).to_be_enabled()

    # Short training keeps the test quick; each change rewrites the YAML.
    _set_field(page, "#step-1-epochs", "2")
    expect(recipe).to_have_value(re.compile(r"distill:[\s\S]*\bepochs: 2\b"))
    _set_field(page, "#step-1-batch_size", "32")
    expect(recipe).to_have_value(re.compile(r"distill:[\s\S]*\bbatch_size: 32\b"))

    # The YAML is editable too: the builder reads it back and keeps the steps.
    edited = recipe.input_value().replace("latency_runs: 50", "latency_runs: 5")
    _set_field(page, "#job-recipe", edited)
    expect(recipe).to_have_value(re.compile(r"latency_runs: 5\b"))
    expect(steps).to_have_count(3)
    assert page.evaluate("window.__noReload") is True
    _shot(page, "09-builder-composed")

    page.get_by_test_id("start-job").click()
    expect(page.get_by_role("heading", name="Compression job")).to_be_visible()
    expect(page.get_by_test_id("stages")).to_contain_text("Step 2: Distillation")
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=300_000)
    expect(page.get_by_test_id("pruned-layers")).to_be_visible()
    expect(page.get_by_test_id("training")).to_contain_text("distill")
    expect(page.locator("[data-testid=stage][data-state=done]")).to_have_count(
        page.get_by_test_id("stage").count()
    )
    expect(page.get_by_test_id("log-tail")).to_contain_text("Distilling")

    # A second job from the same page, through the preset list.
    page.get_by_role("link", name=re.compile(r"tiny_cnn v1")).click()
    page.select_option("#job-dataset", label=DATASET)
    page.select_option("#job-preset", "fast-int8")
    expect(steps).to_have_count(1)
    page.get_by_test_id("start-job").click()
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=180_000)

    # The dashboard: both jobs, the trade-off chart, and the comparison.
    page.get_by_role("link", name="Builder").click()
    rows = page.get_by_test_id("job-row")
    expect(rows).to_have_count(2)
    expect(page.locator("canvas[data-pareto-chart]")).to_have_attribute("data-drawn", "1")
    _shot(page, "11-dashboard")
    for i in range(2):
        rows.nth(i).locator("input[name=jobs]").check()
    page.get_by_test_id("compare-button").click()
    expect(page.get_by_role("heading", name="Compare jobs")).to_be_visible()
    expect(page.get_by_test_id("compare-column")).to_have_count(2)
    expect(page.get_by_test_id("compare")).to_contain_text("File size")
    expect(page.locator("td[data-best]").first).to_be_visible()
    expect(page.get_by_test_id("compare-recipes")).to_contain_text("prune:")
    _shot(page, "10-compare")
