"""/metrics: bearer-token access, and figures that match the database and the broker."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from factories import JobFactory, ProjectFactory, TeamFactory
from jobs.metrics import DURATION_BUCKETS, technique
from jobs.models import Job, WorkerHeartbeat

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-for-tests"
AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}

DYNAMIC = {"version": 1, "steps": [{"quantize": {"mode": "dynamic-int8"}}]}
PIPELINE = {
    "version": 1,
    "steps": [
        {"prune": {"method": "channel", "amount": 0.5}},
        {"distill": {"teacher": "original", "epochs": 2}},
        {"quantize": {"mode": "static-int8", "samples": 64}},
    ],
}


@pytest.fixture
def token(settings):
    settings.MODELPRESS_METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} from a scrape with the right token."""
    response = client.get(reverse("web-metrics"), **AUTH)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def finished(model_version, recipe, state: str, seconds: float) -> Job:
    """A job that ran `seconds` and ended in `state`, moved there by the model's own methods."""
    job = JobFactory(model_version=model_version, recipe=recipe)
    assert job.claim(worker="w1@host")
    if state == Job.Status.SUCCEEDED:
        assert job.succeed({})
    elif state == Job.Status.FAILED:
        assert job.fail("boom")
    else:
        job.cancel()
        assert job.mark_cancelled()
    started = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk=job.pk).update(
        started_at=started, finished_at=started + timedelta(seconds=seconds)
    )
    return job


def test_it_does_not_exist_without_a_configured_token(client, settings):
    settings.MODELPRESS_METRICS_TOKEN = ""
    assert client.get(reverse("web-metrics")).status_code == 404
    assert client.get(reverse("web-metrics"), HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", TOKEN],
)
def test_it_refuses_a_missing_or_wrong_token(client, token, header):
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = client.get(reverse("web-metrics"), **extra)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"modelpress_jobs" not in response.content


def test_it_refuses_a_signed_in_user_without_the_token(client, token, owner):
    client.force_login(owner.user)
    assert client.get(reverse("web-metrics")).status_code == 401


def test_it_answers_the_scraper_with_the_token(client, token):
    samples = scrape(client)
    assert value(samples, "modelpress_jobs", state="queued") == 0


def test_it_counts_jobs_in_every_state(client, token, model_version):
    for _ in range(2):
        JobFactory(model_version=model_version)
    JobFactory(model_version=model_version).claim(worker="w1@host")
    for seconds in (5, 50, 500):
        finished(model_version, DYNAMIC, Job.Status.SUCCEEDED, seconds)
    finished(model_version, DYNAMIC, Job.Status.FAILED, 20)
    JobFactory(model_version=model_version).cancel()  # cancelled while queued

    samples = scrape(client)
    expected = {"queued": 2, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 1}
    assert samples["modelpress_jobs"] == {(("state", s),): n for s, n in expected.items()}


def test_it_reports_every_state_at_zero_without_jobs(client, token):
    samples = scrape(client)
    assert set(samples["modelpress_jobs"].values()) == {0}
    assert {labels[0][1] for labels in samples["modelpress_jobs"]} == set(Job.Status.values)


def test_it_histograms_job_durations_by_technique_and_state(client, token, model_version):
    # Two dynamic-int8 recipes that differ only in settings (one leaves the default mode out)
    # share a label.
    implicit_mode = {"version": 1, "steps": [{"quantize": {"per_channel": True}}]}
    finished(model_version, DYNAMIC, Job.Status.SUCCEEDED, 5)
    finished(model_version, implicit_mode, Job.Status.SUCCEEDED, 45)
    finished(model_version, PIPELINE, Job.Status.SUCCEEDED, 4000)
    finished(model_version, PIPELINE, Job.Status.FAILED, 20)
    finished(model_version, PIPELINE, Job.Status.CANCELLED, 100)
    JobFactory(model_version=model_version, recipe=PIPELINE).cancel()  # never started: no time
    JobFactory(model_version=model_version, recipe=PIPELINE).claim(worker="w")  # not finished

    samples = scrape(client)
    dynamic = {"technique": "quantize:dynamic-int8", "state": "succeeded"}
    pipeline = {"technique": "prune+distill+quantize:static-int8", "state": "succeeded"}
    assert value(samples, "modelpress_job_duration_seconds_count", **dynamic) == 2
    assert value(samples, "modelpress_job_duration_seconds_sum", **dynamic) == pytest.approx(50)
    assert value(samples, "modelpress_job_duration_seconds_bucket", le="10.0", **dynamic) == 1
    assert value(samples, "modelpress_job_duration_seconds_bucket", le="30.0", **dynamic) == 1
    assert value(samples, "modelpress_job_duration_seconds_bucket", le="60.0", **dynamic) == 2
    assert value(samples, "modelpress_job_duration_seconds_bucket", le="+Inf", **dynamic) == 2
    assert value(samples, "modelpress_job_duration_seconds_bucket", le="3600.0", **pipeline) == 0
    assert value(samples, "modelpress_job_duration_seconds_bucket", le="7200.0", **pipeline) == 1
    assert value(samples, "modelpress_job_duration_seconds_sum", **pipeline) == pytest.approx(4000)
    for state, seconds in (("failed", 20), ("cancelled", 100)):
        labels = {"technique": pipeline["technique"], "state": state}
        assert value(samples, "modelpress_job_duration_seconds_count", **labels) == 1
        assert value(samples, "modelpress_job_duration_seconds_sum", **labels) == seconds
    buckets = samples["modelpress_job_duration_seconds_bucket"]
    assert len(buckets) == 4 * (len(DURATION_BUCKETS) + 1)  # four label sets, +Inf included


def test_it_names_techniques_only_from_the_engine_lists():
    assert technique(PIPELINE["steps"]) == "prune+distill+quantize:static-int8"
    assert technique([{"quantize": {}}, {"finetune": {"epochs": 1}}]) == (
        "quantize:dynamic-int8+finetune"
    )
    # Text a user could have written never becomes a label value.
    assert technique([{"my-secret-step": {}}]) == "unknown"
    assert technique([{"quantize": {"mode": "Team Rocket"}}]) == "quantize:unknown"
    assert technique([{"distill": {"teacher": str(uuid.uuid4())}}]) == "distill"
    assert technique(None) == technique([]) == technique("quantize") == "unknown"


def test_it_sums_the_bytes_of_stored_uploads(client, token, model_version, dataset):
    samples = scrape(client)
    # Against the files in storage, not the rows' own size fields.
    assert value(samples, "modelpress_upload_bytes_total", kind="model") == model_version.file.size
    assert value(samples, "modelpress_upload_bytes_total", kind="dataset") == dataset.file.size


def test_it_counts_live_workers(client, token):
    WorkerHeartbeat.beat("w1@host", queues="cpu")
    WorkerHeartbeat.beat("w2@host", queues="gpu")
    WorkerHeartbeat.objects.create(
        hostname="gone@host", last_seen=timezone.now() - timedelta(hours=1)
    )
    assert value(scrape(client), "modelpress_workers_alive") == 2


@pytest.fixture
def unique_queues(settings):
    """The cpu and gpu queues renamed to this test's own, removed from Redis afterwards."""
    from config.celery import app

    suffix = uuid.uuid4().hex[:8]
    settings.MODELPRESS_CPU_QUEUE = f"metrics-test-cpu-{suffix}"
    settings.MODELPRESS_GPU_QUEUE = f"metrics-test-gpu-{suffix}"
    client = redis.Redis.from_url(app.conf.broker_url)
    yield client, settings.MODELPRESS_CPU_QUEUE, settings.MODELPRESS_GPU_QUEUE
    client.delete(settings.MODELPRESS_CPU_QUEUE, settings.MODELPRESS_GPU_QUEUE)
    client.close()


def test_it_reads_queue_depths_from_redis(client, token, settings, unique_queues):
    redis_client, cpu, gpu = unique_queues
    redis_client.lpush(gpu, b"message-1", b"message-2", b"message-3")

    samples = scrape(client)
    assert value(samples, "modelpress_broker_up") == 1
    assert value(samples, "modelpress_queue_depth", queue=gpu) == redis_client.llen(gpu) == 3
    assert value(samples, "modelpress_queue_depth", queue=cpu) == 0  # no such key: empty
    default = settings.CELERY_TASK_DEFAULT_QUEUE
    assert value(samples, "modelpress_queue_depth", queue=default) == redis_client.llen(default)

    redis_client.rpop(gpu)  # a worker took one
    assert value(scrape(client), "modelpress_queue_depth", queue=gpu) == 2


def test_it_counts_message_files_on_the_filesystem_broker(
    client, token, settings, monkeypatch, tmp_path
):
    from kombu import Connection

    from config.celery import app

    folder = tmp_path / "queue"
    folder.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(tmp_path / "control"),  # else ./control
    }
    monkeypatch.setitem(app.conf, "broker_url", "filesystem://")
    monkeypatch.setitem(app.conf, "broker_transport_options", options)
    settings.MODELPRESS_GPU_QUEUE = "gpu-fs"
    with Connection("filesystem://", transport_options=options) as conn:
        queue = conn.SimpleQueue("gpu-fs")
        queue.put({"job": 1})
        queue.put({"job": 2})
        queue.close()

    samples = scrape(client)
    assert value(samples, "modelpress_queue_depth", queue="gpu-fs") == 2
    assert value(samples, "modelpress_queue_depth", queue=settings.MODELPRESS_CPU_QUEUE) == 0


def test_it_still_reports_the_database_figures_when_the_broker_is_down(client, token, monkeypatch):
    from config.celery import app

    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")  # nothing listens
    samples = scrape(client)
    assert value(samples, "modelpress_broker_up") == 0
    assert "modelpress_queue_depth" not in samples
    assert value(samples, "modelpress_jobs", state="queued") == 0


def test_it_costs_a_fixed_number_of_queries(
    client, token, model_version, dataset, django_assert_max_num_queries
):
    recipes = [DYNAMIC, PIPELINE, {"version": 1, "steps": [{"quantize": {"mode": "fp16"}}]}]
    for i in range(12):
        state = (Job.Status.SUCCEEDED, Job.Status.FAILED)[i % 2]
        finished(model_version, recipes[i % 3], state, seconds=10 * (i + 1))
        JobFactory(model_version=model_version)
        WorkerHeartbeat.beat(f"w{i}@host")
    with django_assert_max_num_queries(5):
        samples = scrape(client)
    assert value(samples, "modelpress_jobs", state="queued") == 12
    assert value(samples, "modelpress_workers_alive") == 12


def test_it_puts_no_team_or_user_names_in_labels(client, token, model_version):
    team = TeamFactory(name="Secret Team Omega")
    ProjectFactory(team=team, name="Hidden Project Sigma")
    finished(model_version, PIPELINE, Job.Status.SUCCEEDED, 30)
    body = client.get(reverse("web-metrics"), **AUTH).content.decode()
    for text in ("Secret Team Omega", "Hidden Project Sigma", model_version.project.team.name):
        assert text not in body
    assert model_version.project.name not in body
