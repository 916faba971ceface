"""The live job page: stages with their own progress, an ETA, the log tail, cancel, retry and
duplicate-and-edit, for owners, viewers and outsiders."""

from __future__ import annotations

import html
import itertools
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from compress_engine import Recipe
from factories import JobFactory
from jobrunner.runner import run_job
from jobs.live import (
    PlannedStage,
    current_index,
    eta_text,
    stage_eta,
    stage_plan,
    stage_rows,
)
from jobs.models import Job
from jobs.progress import ENGINE_END, ENGINE_START, MAX_LOG_LINES

pytestmark = pytest.mark.django_db

PRUNE_QUANTIZE = {
    "version": 1,
    "steps": [{"prune": {"method": "channel", "amount": 0.5}}, {"quantize": {}}],
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8},
}


def _running(version, owner, recipe=None) -> Job:
    job = JobFactory(model_version=version, created_by=owner.user, recipe=recipe or PRUNE_QUANTIZE)
    assert job.claim(worker="w@test")
    return job


# --- the plan, the ETA ---------------------------------------------------------------------


def test_it_plans_a_stage_per_recipe_step_between_measuring_and_exporting():
    names = [s.name for s in stage_plan(Recipe.parse(PRUNE_QUANTIZE))]
    assert names == [
        "Fetching the inputs",
        "Measuring the original model",
        "Step 1: Pruning",
        "Step 2: Dynamic int8 quantization",
        "Validating the result",
        "Measuring the compressed model",
        "Checking artifacts",
        "Writing the report",
        "Storing artifacts",
    ]
    plan = stage_plan(Recipe.parse(PRUNE_QUANTIZE))
    # Slices tile the whole bar, with no gap or overlap.
    assert plan[0].lo == 0.0 and plan[-1].hi == 1.0
    assert all(a.hi == pytest.approx(b.lo) for a, b in itertools.pairwise(plan))


def test_its_plan_matches_the_stages_a_real_engine_run_reports(tiny_cnn_onnx, tmp_path):
    """The plan reads the engine's slices; this run proves each label lands in its stage."""
    from compress_engine import compress

    reports: list[tuple[str, float]] = []
    compress(
        tiny_cnn_onnx,
        PRUNE_QUANTIZE,
        out_dir=tmp_path / "out",
        progress=lambda label, f: reports.append(
            (label, ENGINE_START + (ENGINE_END - ENGINE_START) * f)
        ),
    )
    plan = stage_plan(Recipe.parse(PRUNE_QUANTIZE))
    expected = {
        "Measuring original model": "Measuring the original model",
        "Pruning": "Step 1: Pruning",
        "Quantizing (dynamic int8)": "Step 2: Dynamic int8 quantization",
        "Validating result": "Validating the result",
        "Measuring compressed model": "Measuring the compressed model",
        "Checking artifacts": "Checking artifacts",
        "Writing report": "Writing the report",
    }
    seen = set()
    for label, fraction in reports:
        if label not in expected:
            continue
        # A stage's last report (its sub-progress at 1.0) is the next stage's first fraction.
        candidates = {plan[current_index(plan, f)].name for f in (fraction, fraction - 1e-9)}
        assert expected[label] in candidates, (label, fraction, candidates)
        seen.add(label)
    assert seen == set(expected), f"labels not reported: {set(expected) - seen}"


def test_it_waits_for_signal_before_estimating():
    stage = PlannedStage("x", 0.2, 0.4)
    assert stage_eta([], stage, now=100.0) is None
    assert stage_eta([[100.0, 0.20], [101.0, 0.21]], stage, now=101.0) is None  # 1 s: too soon
    assert stage_eta([[100.0, 0.20], [110.0, 0.2001]], stage, now=110.0) is None  # no movement
    # Samples of earlier stages are not this stage's rate.
    assert stage_eta([[0.0, 0.05], [100.0, 0.2], [101.0, 0.201]], stage, now=101) is None


def test_it_estimates_the_rest_of_the_stage_from_its_rate():
    stage = PlannedStage("x", 0.2, 0.4)
    samples = [[100.0, 0.20], [105.0, 0.25], [110.0, 0.30]]  # 0.01 per second
    assert stage_eta(samples, stage, now=110.0) == pytest.approx(10.0)
    # Time since the last report is already spent.
    assert stage_eta(samples, stage, now=114.0) == pytest.approx(6.0)
    assert stage_eta(samples, stage, now=200.0) == 0.0


def test_it_says_estimating_then_gives_an_eta(model_version, owner):
    job = _running(model_version, owner)
    assert eta_text(job) == "estimating…"
    plan = stage_plan(job.recipe_obj)
    lo, hi = plan[2].lo, plan[2].hi
    job.progress = lo + (hi - lo) / 2
    job.timeline = [[1000.0, lo], [1010.0, lo + (hi - lo) / 4], [1020.0, job.progress]]
    # Half the stage in 20 s: about 20 s more.
    assert eta_text(job, now=1020.0) == "about 20 s left in this stage"


# --- the worker's writes -------------------------------------------------------------------


def test_it_logs_stage_changes_and_throttles_repeats(model_version, owner):
    job = _running(model_version, owner)
    t0 = timezone.now()
    assert job.note_progress("Measuring original model", 0.05, at=t0)
    assert not job.note_progress("Measuring original model", 0.06, at=t0 + timedelta(seconds=0.2))
    assert job.note_progress("Measuring original model", 0.07, at=t0 + timedelta(seconds=2))
    assert job.note_progress("Pruning", 0.37, at=t0 + timedelta(seconds=2.1))  # new stage
    job.refresh_from_db()
    lines = job.log_tail.splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == ["Measuring original model", "Pruning"]
    assert [p for _, p in job.timeline] == [0.05, 0.07, 0.37]


def test_it_keeps_the_log_bounded_and_stops_writing_after_the_end(model_version, owner):
    job = _running(model_version, owner)
    t0 = timezone.now()
    for i in range(MAX_LOG_LINES + 30):
        job.note_progress(f"stage {i}", 0.1, at=t0 + timedelta(seconds=i))
    job.refresh_from_db()
    lines = job.log_tail.splitlines()
    assert len(lines) == MAX_LOG_LINES and lines[-1].endswith(f"stage {MAX_LOG_LINES + 29}")
    job.fail("stopped")
    assert not job.note_progress("late", 0.5, at=t0 + timedelta(hours=1))
    job.refresh_from_db()
    assert "late" not in job.log_tail


def test_the_runner_records_the_log_and_timeline_of_a_real_run(model_version, owner, fast_recipe):
    job = JobFactory(model_version=model_version, created_by=owner.user, recipe=fast_recipe)
    run_job(str(job.uuid), worker="w@test")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert "Measuring original model" in job.log_tail and "Writing report" in job.log_tail
    times = [t for t, _ in job.timeline]
    assert len(times) >= 2 and times == sorted(times)


# --- the page ------------------------------------------------------------------------------


def test_it_shows_stages_with_their_progress_while_running(client, owner, model_version):
    job = _running(model_version, owner)
    plan = stage_plan(job.recipe_obj)
    step = plan[2]
    job.record_progress("Pruning", step.lo + (step.hi - step.lo) * 0.5)
    job.note_progress("Pruning", step.lo + (step.hi - step.lo) * 0.5)
    job.refresh_from_db()
    rows = stage_rows(job)
    assert [r.state for r in rows[:4]] == ["done", "done", "running", "pending"]
    assert rows[2].percent == 50 and rows[1].percent == 100 and rows[3].percent == 0

    client.force_login(owner.user)
    page = client.get(reverse("jobs-status", args=[job.uuid]), HTTP_HX_REQUEST="true")
    body = page.content.decode()
    assert page.status_code == 200 and 'hx-trigger="every 2s"' in body
    assert 'data-state="running"' in body and "Step 1: Pruning" in body
    assert 'data-testid="job-eta">estimating…' in body
    assert 'data-testid="log-tail"' in body and "Pruning" in body
    assert 'data-testid="cancel-job"' in body and 'data-testid="retry-job"' not in body


def test_it_marks_where_a_failed_job_stopped(client, owner, model_version):
    job = _running(model_version, owner)
    job.record_progress("Pruning", stage_plan(job.recipe_obj)[2].lo + 0.01)
    job.fail("The engine refused.")
    rows = stage_rows(job)
    assert [r.state for r in rows[:4]] == ["done", "done", "failed", "pending"]
    client.force_login(owner.user)
    done = client.get(reverse("jobs-status", args=[job.uuid]), HTTP_HX_REQUEST="true")
    assert done.status_code == 286  # polling stops at a terminal state
    body = done.content.decode()
    assert 'data-testid="retry-job"' in body and 'data-testid="cancel-job"' not in body


def test_it_retries_with_the_same_recipe_model_and_dataset(
    client, owner, model_version, dataset, django_capture_on_commit_callbacks
):
    job = _running(model_version, owner)
    Job.objects.filter(pk=job.pk).update(dataset=dataset)
    job.fail("Worker lost.")
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(reverse("jobs-retry", args=[job.uuid]))
    new = Job.objects.exclude(pk=job.pk).get()
    assert response["Location"] == reverse("jobs-detail", args=[new.uuid])
    assert new.status == "queued" and len(callbacks) == 1
    assert (new.model_version, new.dataset) == (model_version, dataset)
    assert Recipe.parse(new.recipe) == Recipe.parse(job.recipe)


def test_it_does_not_retry_a_running_job(client, owner, model_version):
    job = _running(model_version, owner)
    client.force_login(owner.user)
    response = client.post(reverse("jobs-retry", args=[job.uuid]), follow=True)
    assert Job.objects.count() == 1
    assert "still running" in response.content.decode()


def test_it_opens_the_form_prefilled_to_duplicate_and_edit(client, owner, model_version, dataset):
    recipe = {"version": 1, "steps": [{"quantize": {"mode": "static-int8", "samples": 33}}]}
    job = JobFactory(model_version=model_version, recipe=recipe, dataset=dataset)
    client.force_login(owner.user)
    response = client.get(reverse("jobs-duplicate", args=[job.uuid]))
    page = response.content.decode()
    assert response.status_code == 200 and 'data-testid="duplicate-of"' in page
    assert f'<option value="{dataset.uuid}" selected>' in page
    yaml_text = page.split('id="job-recipe"', 1)[1].split(">", 1)[1].split("</textarea>")[0]
    assert "samples: 33" in html.unescape(yaml_text)
    assert 'data-technique="quantize:static-int8"' in page
    assert f'action="{reverse("jobs-create", args=[model_version.uuid])}"' in page


def test_it_lets_viewers_watch_but_not_cancel_retry_or_duplicate(client, viewer, model_version):
    job = _running(model_version, viewer)
    client.force_login(viewer.user)
    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()
    assert 'data-testid="stages"' in page
    for action in ("cancel-job", "retry-job", "duplicate-job"):
        assert f'data-testid="{action}"' not in page
    assert client.post(reverse("jobs-cancel", args=[job.uuid])).status_code == 403
    job.fail("x")
    assert client.post(reverse("jobs-retry", args=[job.uuid])).status_code == 403
    assert client.get(reverse("jobs-duplicate", args=[job.uuid])).status_code == 403
    assert Job.objects.count() == 1 and not Job.objects.get().cancel_requested


def test_it_hides_retry_and_duplicate_from_outsiders(client, outsider, owner, model_version):
    job = _running(model_version, owner)
    job.fail("x")
    client.force_login(outsider.user)
    assert client.post(reverse("jobs-retry", args=[job.uuid])).status_code == 404
    assert client.get(reverse("jobs-duplicate", args=[job.uuid])).status_code == 404
    assert client.get(reverse("jobs-detail", args=[job.uuid])).status_code == 404
    assert Job.objects.count() == 1
