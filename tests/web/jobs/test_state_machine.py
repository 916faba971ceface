from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def job(model_version, owner, fast_recipe):
    return Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=fast_recipe,
        created_by=owner.user,
    )


def test_it_lets_exactly_one_worker_claim_a_queued_job(job):
    assert job.claim(worker="w1")
    assert job.status == "running" and job.started_at and job.heartbeat_at
    assert not Job.objects.get(pk=job.pk).claim(worker="w2")
    assert Job.objects.get(pk=job.pk).worker == "w1"


def test_it_does_not_let_a_queued_job_succeed_without_running(job):
    assert not job.succeed({"any": "report"})
    assert job.status == "queued" and job.report is None


def test_it_keeps_terminal_states_final(job):
    job.claim(worker="w1")
    assert job.succeed({"ok": True})
    assert not job.fail("late failure")
    assert not job.cancel()
    assert not job.claim(worker="w2")
    job.refresh_from_db()
    assert job.status == "succeeded" and job.error == "" and job.finished_at


def test_it_cancels_a_queued_job_at_once(job):
    assert job.cancel()
    assert job.status == "cancelled" and job.finished_at
    assert not job.claim(worker="w1")


def test_it_flags_a_running_job_for_its_worker_to_stop(job):
    job.claim(worker="w1")
    assert job.cancel()
    assert job.status == "running" and job.cancel_requested and job.is_cancel_requested()
    assert job.mark_cancelled()
    assert job.status == "cancelled"


def test_it_records_progress_only_while_running(job):
    job.record_progress("Quantizing", 0.5)
    job.refresh_from_db()
    assert job.progress == 0.0
    job.claim(worker="w1")
    job.record_progress("Quantizing", 1.7)
    job.refresh_from_db()
    assert job.stage == "Quantizing" and job.progress == 1.0


def test_it_reaps_running_jobs_whose_heartbeat_stopped(job, model_version, owner, fast_recipe):
    job.claim(worker="w1")
    fresh = Job.objects.create(
        team=job.team, project=job.project, model_version=model_version, recipe=fast_recipe
    )
    fresh.claim(worker="w2")
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))

    assert Job.reap_stale(timedelta(minutes=5)) == 1

    job.refresh_from_db()
    fresh.refresh_from_db()
    assert job.status == "failed" and "Worker lost" in job.error
    assert fresh.status == "running"


def _point(epoch: int, step: int = 1) -> dict:
    from compress_engine.report import TrainingPoint

    return TrainingPoint(
        step=step,
        kind="distill",
        epoch=epoch,
        optimizer_steps=6 * epoch,
        train_loss=None if epoch == 0 else 1.0 / epoch,
        val_metric=50.0 + epoch,
        metric="accuracy",
        lr=1e-3,
        elapsed_s=0.5 * epoch,
        eta_s=None,
    ).model_dump(mode="json")


def test_it_records_training_points_only_while_running(job):
    assert not job.record_training(_point(0))
    job.refresh_from_db()
    assert job.training == []

    job.claim(worker="w1")
    assert job.record_training(_point(0)) and job.record_training(_point(1))
    assert not job.record_training(_point(1))  # a repeated call keeps one copy
    job.refresh_from_db()
    assert [p["epoch"] for p in job.training] == [0, 1] and job.heartbeat_at

    job.succeed({"ok": True})
    assert not job.record_training(_point(2))
    job.refresh_from_db()
    assert [p["epoch"] for p in job.training] == [0, 1]


def test_it_keeps_only_the_newest_training_points(job, monkeypatch):
    assert Job.MAX_TRAINING_POINTS == 2000
    monkeypatch.setattr(Job, "MAX_TRAINING_POINTS", 5)
    job.claim(worker="w1")
    for epoch in range(8):
        job.record_training(_point(epoch))
    job.refresh_from_db()
    assert [p["epoch"] for p in job.training] == [3, 4, 5, 6, 7]
