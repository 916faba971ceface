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


def _stop_heartbeat(job: Job) -> None:
    Job.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))


def test_it_requeues_a_job_whose_heartbeat_stopped_once_then_fails_it(
    job, model_version, fast_recipe
):
    job.claim(worker="w1")
    job.record_training({"epoch": 0})
    fresh = Job.objects.create(
        team=job.team, project=job.project, model_version=model_version, recipe=fast_recipe
    )
    fresh.claim(worker="w2")
    _stop_heartbeat(job)

    reaped = Job.reap_stale(timedelta(minutes=5))

    assert [j.pk for j in reaped.requeued] == [job.pk] and reaped.failed == 0
    job.refresh_from_db()
    assert job.status == "queued" and job.attempts == 1 and job.error == ""
    assert job.training == [] and job.progress == 0.0 and job.worker == ""
    assert "Worker lost" in job.log_tail and "run 2 of 2" in job.log_tail
    fresh.refresh_from_db()
    assert fresh.status == "running"
    assert Job.reap_stale(timedelta(minutes=5)).requeued == []  # acted on once

    # The second run's worker is lost too: no third run.
    assert job.claim(worker="w3") and job.attempts == 2
    _stop_heartbeat(job)
    reaped = Job.reap_stale(timedelta(minutes=5))
    assert (reaped.requeued, reaped.failed) == ([], 1)
    job.refresh_from_db()
    assert job.status == "failed" and job.error.startswith("Worker lost")


def test_it_cancels_a_lost_job_whose_cancel_was_requested(job):
    job.claim(worker="w1")
    job.cancel()
    _stop_heartbeat(job)
    assert Job.reap_stale(timedelta(minutes=5)).cancelled == 1
    job.refresh_from_db()
    assert job.status == "cancelled"


def test_it_ignores_a_lost_run_that_comes_back_after_its_job_was_requeued(job):
    lost = Job.objects.get(pk=job.pk)
    assert lost.claim(worker="w1")
    _stop_heartbeat(lost)
    Job.reap_stale(timedelta(minutes=5))
    assert job.claim(worker="w2") and job.attempts == 2

    # The first worker was only cut off; its late writes must not touch the second run.
    lost.record_progress("late", 0.9)
    assert not lost.record_training({"epoch": 7})
    assert not lost.succeed({"from": "the lost run"})
    assert not lost.fail("late failure")
    job.refresh_from_db()
    assert job.status == "running" and job.stage != "late" and job.training == []
    assert job.succeed({"from": "the second run"})
    assert job.report == {"from": "the second run"}


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
