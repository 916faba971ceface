"""Faults the platform must survive, against real PostgreSQL, Redis, gunicorn and Celery worker
processes (issue 7, Reliability).

The tests that kill workers or restart Redis run their own redis-server (a free port, in a
temporary folder), their own gunicorn web process and their own workers on it, so the Redis and
the worker that the other integration tests share are never touched. Those workers re-queue
a job whose heartbeat stopped after JOB_STALE_S seconds (production: 300 s).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import (
    REPO,
    WorkerProcess,
    start_worker,
    stop_process,
    storage_files,
    subprocess_database_url,
    wait_for_heartbeat,
    wait_for_job,
)
from jobs.models import Artifact, Job, artifact_folder

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUEUE = "faults"
# Heartbeats every second; a running job silent for this long has lost its worker.
JOB_STALE_S = 4
WEB_DB_APPLICATION = "modelpress-faults-web"
# Long enough to kill mid-run (an epoch takes ~0.1 s on two idle cores), short enough to run
# again: a few seconds.
EPOCHS = 30
LONG_DISTILL = {
    "version": 1,
    "steps": [{"distill": {"epochs": EPOCHS, "batch_size": 4, "patience": None}}],
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": []},
}
QUICK = {
    "version": 1,
    "steps": [{"quantize": {"mode": "dynamic-int8"}}],
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8},
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


# --- a Redis of our own ----------------------------------------------------------------------


@dataclass
class RedisServer:
    port: int
    folder: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("the fault tests need redis-server on PATH (Debian package redis-server)")
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                # The append-only file, as deployed (deploy/docker-compose.yml): queued
                # messages outlive a restart.
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "yes", "--dir", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_until(self._answers, 10, f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """As an operator or orchestrator restarts it: every client connection drops."""
        self.stop()
        self.start()

    def _answers(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False


@pytest.fixture(scope="module")
def fault_redis(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(_free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _service_env(redis_server: RedisServer) -> dict[str, str]:
    """What the web and the workers of these tests share: the broker and the queue names."""
    return {
        "CELERY_BROKER_URL": redis_server.url,
        "CELERY_TASK_DEFAULT_QUEUE": QUEUE,
        "MODELPRESS_CPU_QUEUE": QUEUE,
        "MODELPRESS_GPU_QUEUE": f"{QUEUE}-gpu",
    }


# --- the web: gunicorn, as deployed ----------------------------------------------------------


@dataclass
class WebProcess:
    process: subprocess.Popen
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=30)


@pytest.fixture(scope="module")
def web(fault_redis, django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[WebProcess]:
    """gunicorn (gthread, as in deploy/) serving the platform against the test database, with
    a database application_name of its own so a test can cut exactly its connections."""
    with django_db_blocker.unblock():
        database_url = f"{subprocess_database_url()}?application_name={WEB_DB_APPLICATION}"
    port = _free_port()
    log_path = tmp_path_factory.mktemp("web") / "gunicorn.log"
    env = {
        **os.environ,
        **_service_env(fault_redis),
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": database_url,
        "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "workers")]),
    }
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind",
        f"127.0.0.1:{port}", "--workers", "1", "--threads", "2", "--worker-class", "gthread",
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = WebProcess(process, f"http://127.0.0.1:{port}", log_path)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited early:\n{server.log()}")
        try:
            return server.get("/healthz?probe=live").status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(answers, 60, "gunicorn answering /healthz")
        yield server
    finally:
        stop_process(process)


@pytest.fixture
def api_token(owner) -> str:
    from accounts.tokens import create_token

    return create_token(user=owner.user, name="fault tests").raw


def start_job(web: WebProcess, token: str, version, recipe: dict, dataset=None) -> Job:
    """Start a job the way a client does: POST to the API of the gunicorn web process."""
    payload = {"recipe": recipe, "dataset": str(dataset.uuid) if dataset else None}
    response = requests.post(
        f"{web.url}/api/v1/models/{version.uuid}/jobs",
        json=payload,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert response.status_code == 201, f"{response.status_code} {response.text}\n{web.log()}"
    return Job.objects.get(uuid=response.json()["id"])


# --- workers of our own ----------------------------------------------------------------------


@pytest.fixture
def start_fault_workers(fault_redis, tmp_path) -> Iterator[Callable[[int], list[WorkerProcess]]]:
    """Starts workers on the fault tests' Redis, together, and waits for their first
    heartbeats; stops whatever is left of them afterwards."""
    started: list[WorkerProcess] = []
    env = {
        **_service_env(fault_redis),
        "MODELPRESS_WORKER_HEARTBEAT_SECONDS": "1",
        "MODELPRESS_JOB_STALE_SECONDS": str(JOB_STALE_S),
        # One torch thread: on two busy cores, spinning OpenMP threads slow training tenfold.
        "OMP_NUM_THREADS": "1",
    }

    def start(count: int) -> list[WorkerProcess]:
        workers = [
            start_worker(tmp_path / f"worker-{len(started) + i}.log", queues=QUEUE, env=env)
            for i in range(count)
        ]
        started.extend(workers)
        for worker in workers:
            wait_for_heartbeat(worker, timeout=90)
        return workers

    yield start
    for worker in started:
        stop_process(worker.process)


def kill_worker(worker: WorkerProcess) -> None:
    """SIGKILL the whole worker, main process and pool child: nothing can ack, reject or
    restore its message, as when its machine or container dies."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def kill_pool_child(worker: WorkerProcess) -> None:
    """SIGKILL the worker's pool process (the one running the job), as the kernel's OOM killer
    does; the main process lives on and sees the child die."""
    pid = worker.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, f"the worker has no pool process:\n{worker.log()}"
    for child in children:
        os.kill(int(child), signal.SIGKILL)


def wait_for_training(job: Job, attempt: int, timeout: float = 60) -> None:
    """Until the job's run number `attempt` is training (a point of its curve is recorded)."""

    def training() -> bool:
        job.refresh_from_db()
        if job.is_terminal:
            raise AssertionError(f"job ended ({job.status}: {job.error}) before it was killed")
        return job.status == "running" and job.attempts == attempt and bool(job.training)

    wait_until(training, timeout, f"job {job.uuid} training in run {attempt}")


def assert_one_result_set(job: Job) -> None:
    """The job's Artifact rows are exactly the files of its report, each stored once."""
    from compress_engine import Report

    report = Report.model_validate(job.report)
    artifacts = list(Artifact.objects.filter(job=job))
    assert sorted(a.name for a in artifacts) == sorted(f.name for f in report.files)
    assert {a.sha256 for a in artifacts} == {f.sha256 for f in report.files}
    prefix = f"artifacts/{job.team.uuid}/{job.uuid}/"
    stored = [name for name in storage_files() if name.startswith(prefix)]
    assert sorted(stored) == sorted(a.file.name for a in artifacts)


# --- 1. a worker killed mid-job --------------------------------------------------------------


def test_it_reruns_a_job_whose_worker_was_killed_on_a_fresh_worker(
    web, api_token, start_fault_workers, fault_redis, model_version, dataset
):
    (first,) = start_fault_workers(1)
    job = start_job(web, api_token, model_version, LONG_DISTILL, dataset)
    first_message = job.celery_task_id
    wait_for_training(job, attempt=1)

    kill_worker(first)
    (second,) = start_fault_workers(1)

    # The second worker's reaper sees the heartbeat stop and re-queues the job once; the
    # second worker (the only one left) runs it again from the start, to the end.
    job = wait_for_job(job, timeout=120)
    assert job.status == "succeeded", f"{job.error}\n{second.log()}"
    assert job.attempts == 2 and job.worker == second.hostname
    assert "Worker lost" in job.log_tail and "re-queued for run 2 of 2" in job.log_tail
    # The curve is the second run's alone: every epoch once, from 0.
    assert [p["epoch"] for p in job.training] == list(range(EPOCHS + 1))
    assert_one_result_set(job)
    # Why the reaper is needed on Redis: the killed worker's message is still unacknowledged
    # there, and comes back only after the visibility timeout (an hour in tests, 6 h deployed);
    # the re-run went out as a message of its own.
    assert job.celery_task_id != first_message
    unacked = fault_redis.client().hvals("unacked")
    assert [m for m in unacked if first_message.encode() in m], unacked


def test_it_fails_a_job_with_worker_lost_when_its_rerun_is_killed_too(
    web, api_token, start_fault_workers, model_version, dataset
):
    (worker,) = start_fault_workers(1)
    job = start_job(web, api_token, model_version, LONG_DISTILL, dataset)
    wait_for_training(job, attempt=1)

    kill_pool_child(worker)
    # reject_on_worker_lost puts the message back at once; that delivery finds the job still
    # running and does nothing. The worker's reaper re-queues it once its heartbeat is stale.
    wait_for_training(job, attempt=2, timeout=60)
    kill_pool_child(worker)

    job = wait_for_job(job, timeout=60)
    assert job.status == "failed" and job.error.startswith("Worker lost"), job.error
    assert job.attempts == 2 and not Artifact.objects.filter(job=job).exists()
    assert "not queued; skipping" in worker.log()  # the re-delivered message, ignored
    assert worker.process.poll() is None  # the worker itself lived on throughout


# --- 2. Redis restarted during a run ---------------------------------------------------------


def test_it_finishes_the_running_job_and_takes_new_ones_after_redis_restarts(
    web, api_token, start_fault_workers, fault_redis, model_version, dataset
):
    (worker,) = start_fault_workers(1)
    running = start_job(web, api_token, model_version, LONG_DISTILL, dataset)
    wait_for_training(running, attempt=1)
    waiting = start_job(web, api_token, model_version, QUICK)  # behind it, in Redis

    fault_redis.restart()

    for job in (running, waiting):
        job = wait_for_job(job, timeout=90)
        assert job.status == "succeeded", f"{job.error}\n{worker.log()}"
        assert job.attempts == 1
    # The web's pooled broker connection died with Redis: it publishes again, and the worker,
    # reconnected, takes the job.
    after = wait_for_job(start_job(web, api_token, model_version, QUICK), timeout=90)
    assert after.status == "succeeded", f"{after.error}\n{worker.log()}"
    assert after.worker == worker.hostname and worker.process.poll() is None
    assert "Connection to broker lost" in worker.log()


# --- 3. PostgreSQL connections dropped -------------------------------------------------------


def _cut_web_database_connections(cursor) -> int:
    cursor.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        [WEB_DB_APPLICATION],
    )
    return cursor.fetchone()[0]


def test_healthz_says_503_while_the_database_is_unreachable_and_recovers(web):
    import psycopg
    from django.db import connection

    ready = "/healthz?probe=ready"
    assert web.get(ready).status_code == 200
    assert web.get(ready).status_code == 200  # both threads hold a connection now
    db = connection.settings_dict
    # PostgreSQL refuses ALLOW_CONNECTIONS on the database a session is connected to.
    admin = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True
    )
    with admin, admin.cursor() as cursor:
        # A dropped connection: the next request notices (health check) and reconnects.
        assert _cut_web_database_connections(cursor) >= 1
        response = web.get(ready)
        assert response.status_code == 200, response.text

        # PostgreSQL refusing connections (as while it restarts): 503, naming the database.
        cursor.execute(f'ALTER DATABASE "{db["NAME"]}" ALLOW_CONNECTIONS false')
        try:
            assert _cut_web_database_connections(cursor) >= 1
            for _ in range(2):  # and stays so, request after request
                response = web.get(ready)
                assert response.status_code == 503, response.text
                body = response.json()
                assert body["ok"] is False and body["checks"]["database"]["ok"] is False
                assert "OperationalError" in body["checks"]["database"]["error"]
                assert body["checks"]["broker"]["ok"] and body["checks"]["storage"]["ok"]
        finally:
            cursor.execute(f'ALTER DATABASE "{db["NAME"]}" ALLOW_CONNECTIONS true')

    # Back without restarting anything.
    response = web.get(ready)
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["database"]["ok"] is True


# --- 4. storage full while writing an artifact -----------------------------------------------


@pytest.fixture
def own_storage(settings, tmp_path) -> Path:
    """A storage folder for this test alone (request it before any fixture that stores), so
    the test can see every file and folder in it."""
    root = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(root)}},
    }
    return root


def storage_tree(root: Path) -> list[str]:
    """Every file and folder under the storage root, hidden ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _job_row(version, owner, recipe, dataset=None) -> Job:
    return Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        dataset=dataset,
        recipe=recipe,
        created_by=owner.user,
    )


def test_it_fails_cleanly_and_keeps_nothing_when_the_storage_fills_up(
    own_storage, model_version, owner, monkeypatch
):
    from jobrunner.runner import run_job

    # Magnitude pruning gives two artifacts (.onnx and a zipped copy): the first is stored,
    # the disk fills up half-way through the second.
    recipe = {**QUICK, "steps": [{"prune": {"method": "magnitude", "amount": 0.6}}]}
    job = _job_row(model_version, owner, recipe)
    before = storage_tree(own_storage)
    real_copy = shutil.copyfile
    writes: list[str] = []

    def copy_until_full(source, target, *args, **kwargs):
        if not Path(target).is_relative_to(own_storage):
            return real_copy(source, target, *args, **kwargs)  # the engine's own copies
        writes.append(str(target))
        if len(writes) == 1:
            return real_copy(source, target, *args, **kwargs)
        with open(source, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    monkeypatch.setattr(shutil, "copyfile", copy_until_full)
    run_job(str(job.uuid))

    job.refresh_from_db()
    assert len(writes) == 2 and all(".partial" in w for w in writes)
    assert job.status == "failed"
    assert job.error.startswith("Could not store the artifact model.")
    assert ": the storage is full (no space left on the device" in job.error
    assert "No artifact of this job was kept" in job.error
    assert not Artifact.objects.exists()
    # Not the first artifact, not the partial second, not even the job's own folder (the
    # team's artifacts folder may stay: other jobs of the team share it).
    team_folders = {"artifacts", f"artifacts/{job.team.uuid}"}
    assert set(storage_tree(own_storage)) - team_folders == set(before)


# --- 5. two workers racing for one job -------------------------------------------------------


def test_two_workers_racing_for_one_job_run_it_once(model_version, owner, monkeypatch):
    from django.db import connection

    from jobrunner.runner import run_job

    job = _job_row(model_version, owner, QUICK)
    real_claim = Job.claim
    at_the_line = threading.Barrier(2, timeout=30)
    claims: list[bool] = []

    def claim_together(self, **kwargs):
        at_the_line.wait()  # both deliveries reach the claim at the same moment
        claimed = real_claim(self, **kwargs)
        claims.append(claimed)
        return claimed

    monkeypatch.setattr(Job, "claim", claim_together)
    errors: list[BaseException] = []

    def deliver(worker: str) -> None:
        try:
            run_job(str(job.uuid), task_id="the-task", worker=worker)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(f"w{i}@race",)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors and sorted(claims) == [False, True]
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 1, job.error
    assert_one_result_set(job)


def test_a_task_delivered_to_two_workers_runs_once(
    web, api_token, start_fault_workers, fault_redis, model_version, dataset
):
    from kombu import Connection

    from jobrunner.tasks import run_compression_job

    workers = start_fault_workers(2)
    job = start_job(web, api_token, model_version, LONG_DISTILL, dataset)
    # The same message again (a broker redelivery, a client retry), while one worker runs it:
    # the other, idle, takes it.
    with Connection(fault_redis.url) as connection:
        run_compression_job.apply_async(
            args=[str(job.uuid)], task_id=job.celery_task_id, queue=QUEUE, connection=connection
        )

    job = wait_for_job(job, timeout=90)
    assert job.status == "succeeded" and job.attempts == 1, job.error
    assert_one_result_set(job)
    received = f"run_compression_job[{job.celery_task_id}] received"
    logs = [worker.log() for worker in workers]
    assert [log.count(received) for log in logs] == [1, 1], "\n".join(logs)
    assert sum(log.count("not queued; skipping") for log in logs) == 1


# --- 6. deleting a project or a model version removes its files ------------------------------


@pytest.mark.django_db  # in one transaction: the upload's conversion is run here, not queued
@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_deleting_a_model_version_and_a_project_removes_their_files(
    own_storage,
    client,
    owner,
    project,
    model_version,
    dataset,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    import torch
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.urls import reverse

    from accounts.models import User
    from conftest import tiny_torch_net
    from jobrunner.ingest import convert_model_version
    from jobrunner.runner import run_job
    from registry.models import ModelVersion

    # A converted upload keeps its TorchScript source beside the ONNX it was converted to.
    torchscript = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(tiny_torch_net(), torch.randn(1, 3, 16, 16)), torchscript)
    client.force_login(owner.user)
    with django_capture_on_commit_callbacks(execute=False):  # converted below, in-process
        client.post(
            reverse("registry-upload", args=[project.uuid]),
            {
                "file": SimpleUploadedFile("net.pt", torchscript.read_bytes()),
                "input_shapes": "input: 1x3x16x16",
            },
        )
    converted = ModelVersion.objects.get(project=project, source_format="torchscript")
    convert_model_version(str(converted.uuid))
    converted.refresh_from_db()
    assert converted.status == "ready" and converted.source_file.name
    # A job with artifacts on each model.
    jobs = [
        _job_row(model_version, owner, QUICK, dataset),
        _job_row(converted, owner, QUICK),
    ]
    for job in jobs:
        run_job(str(job.uuid))
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
    files = {
        "model": {model_version.file.name},
        "converted": {converted.file.name, converted.source_file.name},
        "dataset": {dataset.file.name},
        "model job": {a.file.name for a in jobs[0].artifacts.all()},
        "converted job": {a.file.name for a in jobs[1].artifacts.all()},
    }
    assert all(files.values()) and set().union(*files.values()) == set(_files(own_storage))
    # What a worker SIGKILLed while storing leaves in a job's folder: a half-written temporary
    # file, and an artifact stored but never recorded.
    for job in jobs:
        folder = artifact_folder(job)
        files[f"orphans {job.pk}"] = {
            default_storage.save(f"{folder}/.model.int8.onnx.0123.partial", ContentFile(b"ha")),
            default_storage.save(f"{folder}/model.int8.onnx", ContentFile(b"never recorded")),
        }

    # A site admin deletes the converted model version in Django admin: its files and its
    # job's artifacts go, the rest stays.
    admin = User.objects.create_superuser("site-admin", "admin@example.com", "pw-for-tests-1")
    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:registry_modelversion_delete", args=[converted.pk]), {"post": "yes"}
        )
    assert response.status_code == 302, response.content.decode()[-3000:]
    kept = files["model"] | files["dataset"] | files["model job"] | files[f"orphans {jobs[0].pk}"]
    assert set(_files(own_storage)) == kept

    # Then the whole project: nothing of it is left, not even an empty folder of its objects.
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("admin:registry_project_delete", args=[project.pk]), {"post": "yes"}
        )
    assert response.status_code == 302
    assert _files(own_storage) == []
    # Only the team's folders stay (its other projects share them); no object's folder does.
    team_folders = {f"{kind}/{project.team.uuid}" for kind in ("models", "datasets", "artifacts")}
    assert set(storage_tree(own_storage)) <= team_folders | {f.split("/")[0] for f in team_folders}


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
