"""Fixtures shared by the platform, worker and browser tests.

Engine tests (tests/engine/) use none of these and import no Django.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The tiny random llama's Hugging Face folder, built once per session for the language-model
# upload tests (web and worker).
from llm_builders import tiny_hf_dir  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "pw-for-tests-1"


@dataclass
class Persona:
    user: object
    role: str


@pytest.fixture
def team(db):
    from factories import TeamFactory

    return TeamFactory()


def _persona(team, role: str) -> Persona:
    from factories import MembershipFactory

    return Persona(MembershipFactory(team=team, role=role).user, role)


@pytest.fixture
def owner(team) -> Persona:
    return _persona(team, "owner")


@pytest.fixture
def member(team) -> Persona:
    return _persona(team, "member")


@pytest.fixture
def viewer(team) -> Persona:
    return _persona(team, "viewer")


@pytest.fixture
def outsider(db) -> Persona:
    """Owner of another team: must see nothing of `team`."""
    from factories import MembershipFactory

    return Persona(MembershipFactory(role="owner").user, "owner")


@pytest.fixture
def project(team, owner):
    from factories import ProjectFactory

    return ProjectFactory(team=team, created_by=owner.user)


@pytest.fixture(scope="session")
def tiny_cnn_onnx(tmp_path_factory) -> Path:
    from model_builders import export_tiny_cnn

    return export_tiny_cnn(tmp_path_factory.mktemp("models") / "tiny_cnn.onnx")


@pytest.fixture(scope="session")
def tiny_mlp_onnx(tmp_path_factory) -> Path:
    from model_builders import export_tiny_mlp

    return export_tiny_mlp(tmp_path_factory.mktemp("models") / "tiny_mlp.onnx")


@pytest.fixture(scope="session")
def trained_cnn_onnx(tmp_path_factory) -> Path:
    from model_builders import export_trained_cnn

    return export_trained_cnn(tmp_path_factory.mktemp("models") / "trained_cnn.onnx")


@pytest.fixture(scope="session")
def pattern_npz(tmp_path_factory) -> Path:
    """Labelled samples the trained CNN was not trained on (x [N, 1, 8, 8], y [N])."""
    import numpy as np

    from model_builders import pattern_dataset

    x, y = pattern_dataset(400, seed=7)
    path = tmp_path_factory.mktemp("data") / "patterns.npz"
    np.savez(path, x=x, y=y)
    return path


def _temporary_upload(path: Path):
    from django.core.files.uploadedfile import TemporaryUploadedFile

    upload = TemporaryUploadedFile(path.name, "application/octet-stream", 0, None)
    upload.write(path.read_bytes())
    upload.size = path.stat().st_size
    upload.flush()
    return upload


def _ingest(ingest, project, owner, path: Path):
    """Run a real upload service on a file, as if it had just been uploaded."""
    upload = _temporary_upload(path)
    try:
        return ingest(project=project, user=owner.user, upload=upload)
    finally:
        upload.close()


@pytest.fixture
def model_version(project, owner, tiny_cnn_onnx):
    """A model version ingested through the real upload service."""
    from registry.services import ingest_model_upload

    return _ingest(ingest_model_upload, project, owner, tiny_cnn_onnx)


@pytest.fixture
def trained_model_version(project, owner, trained_cnn_onnx):
    from registry.services import ingest_model_upload

    return _ingest(ingest_model_upload, project, owner, trained_cnn_onnx)


@pytest.fixture
def dataset(project, owner, pattern_npz):
    """A labelled .npz dataset ingested through the real upload service."""
    from registry.services import ingest_dataset_upload

    return _ingest(ingest_dataset_upload, project, owner, pattern_npz)


@pytest.fixture
def fast_recipe() -> dict:
    """The default dynamic-int8 recipe with few latency runs, to keep tests quick."""
    from compress_engine.configs import default_recipe

    recipe = default_recipe().model_dump(mode="json")
    recipe["evaluate"].update(latency_runs=5, warmup=1, fidelity_samples=8)
    return recipe


def storage_files() -> list[str]:
    """Every file under the default storage's root (local filesystem storage in tests)."""
    from django.core.files.storage import default_storage

    root = Path(default_storage.location)
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    hostname: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_heartbeat(worker: WorkerProcess, timeout: float) -> None:
    from jobs.models import WorkerHeartbeat

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.process.poll() is not None:
            raise RuntimeError(f"the Celery worker exited early:\n{worker.log()}")
        if WorkerHeartbeat.objects.filter(hostname=worker.hostname).exists():
            return
        time.sleep(0.25)
    raise RuntimeError(f"the Celery worker sent no heartbeat in {timeout} s:\n{worker.log()}")


def subprocess_database_url() -> str:
    """The URL of the test database, for processes the tests start (workers, web servers)."""
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def start_worker(
    log_path: Path,
    *,
    queues: str,
    env: dict[str, str] | None = None,
    hostname: str | None = None,
) -> WorkerProcess:
    """Start a real `celery worker` process (one prefork child) against the test database,
    in a session of its own so it can be signalled as a group. `env` adds to (or overrides)
    the environment: the broker, queue names, heartbeat and reaper intervals."""
    from django.conf import settings

    hostname = hostname or f"test-worker-{uuid.uuid4().hex[:8]}@localhost"
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": subprocess_database_url(),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "CELERY_TASK_DEFAULT_QUEUE": settings.CELERY_TASK_DEFAULT_QUEUE,
        "MODELPRESS_WORKER_HEARTBEAT_SECONDS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "workers")]),
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "config.celery", "worker",
        "--loglevel", "INFO", "--concurrency", "1", "--pool", "prefork",
        "--queues", queues, "--hostname", hostname,
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO, env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return WorkerProcess(process, hostname, log_path)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process group started with start_new_session (SIGKILL if it lingers)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup, django_db_blocker, tmp_path_factory
) -> Iterator[WorkerProcess]:
    """A real `celery worker` process on the local Redis, against the test database.

    Tests that use it need committed data (transactional_db or live_server), because the
    worker reads the database over its own connection.
    """
    from django.conf import settings

    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with django_db_blocker.unblock():
        # The run's job queue and its conversions' queue (a separate worker in production).
        queues = f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.MODELPRESS_CONVERT_QUEUE}"
        worker = start_worker(log_path, queues=queues)
    try:
        with django_db_blocker.unblock():
            wait_for_heartbeat(worker, timeout=90)
        yield worker
    finally:
        stop_process(worker.process)


def wait_for_job(job, timeout: float = 180.0):
    """Poll the job row until it is terminal; returns the refreshed job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.is_terminal:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job.uuid} still {job.status} ({job.stage}) after {timeout} s")


@pytest.fixture
def worker(celery_worker_process, transactional_db) -> Iterator[WorkerProcess]:
    """The session's worker, once it has beaten again: each transactional test starts from
    emptied tables, heartbeat rows included. After the test it waits until the worker has
    finished every task the test sent (a job cancelled while queued is still delivered and
    skipped): a task reading several tables while the tables are emptied can deadlock."""
    wait_for_heartbeat(celery_worker_process, timeout=30)
    yield celery_worker_process
    wait_for_idle_broker(celery_worker_process, timeout=60)


def wait_for_idle_broker(worker: WorkerProcess, timeout: float) -> None:
    """Until the broker holds no message for the worker's queue, waiting or delivered but
    not yet acknowledged (tasks ack late, once they have run). kombu's Redis transport keeps
    delivered messages in its `unacked` hash as [message, exchange, routing key]; other
    runs' entries in that hash are not ours to wait for."""
    import json

    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    queues = {settings.CELERY_TASK_DEFAULT_QUEUE, settings.MODELPRESS_CONVERT_QUEUE}

    def ours_unacked() -> bool:
        return any(json.loads(v)[2] in queues for v in client.hvals("unacked"))

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not any(client.llen(q) for q in queues) and not ours_unacked():
                return
            time.sleep(0.2)
    finally:
        client.close()
    raise RuntimeError(f"the Celery worker was still busy after {timeout} s:\n{worker.log()}")


@pytest.fixture
def admin(team) -> Persona:
    """A team admin: manages members and invites, but not the team itself."""
    return _persona(team, "admin")


# --- Model files in the formats ingest converts (engine and platform tests) -----------------


def tiny_torch_net():
    """Conv -> ReLU -> pool -> Linear on [N, 3, 16, 16], in eval mode, seeded."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 5),
    ).eval()


@pytest.fixture(scope="session")
def torch_model_files(tmp_path_factory) -> dict[str, Path]:
    """tiny_torch_net saved as TorchScript (traced, `net.pt`), as a torch.export program
    (`net.pt2`) and, for refusals, as torch.save checkpoints (state dict, whole module)."""
    import torch

    folder = tmp_path_factory.mktemp("torch")
    net = tiny_torch_net()
    example = torch.randn(1, 3, 16, 16)
    files = {
        "torchscript": folder / "net.pt",
        "export": folder / "net.pt2",
        "state_dict": folder / "weights.pt",
        "module": folder / "module.pt",
    }
    torch.jit.save(torch.jit.trace(net, example), files["torchscript"])
    torch.export.save(torch.export.export(net, (example,)), files["export"])
    torch.save(net.state_dict(), files["state_dict"])
    torch.save(net, files["module"])
    return files


_KERAS_BUILDER = """
import os, sys, zipfile
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, keras
out = sys.argv[1]
keras.utils.set_random_seed(0)
inp = keras.Input((8, 8, 3), name="image")
y = keras.layers.Conv2D(4, 3, activation="relu")(inp)
y = keras.layers.GlobalAveragePooling2D()(y)
model = keras.Model(inp, keras.layers.Dense(5)(y))
model.save(os.path.join(out, "net.keras"))
saved = os.path.join(out, "saved")
model.export(saved)
with zipfile.ZipFile(os.path.join(out, "saved.zip"), "w") as zf:
    for root, _, files in os.walk(saved):
        for f in files:
            full = os.path.join(root, f)
            zf.write(full, os.path.join("saved", os.path.relpath(full, saved)))
x = np.random.default_rng(5).standard_normal((3, 8, 8, 3)).astype("float32")
np.savez(os.path.join(out, "reference.npz"), x=x, y=model(x, training=False).numpy())
"""


@pytest.fixture(scope="session")
def keras_model_files(tmp_path_factory) -> Path:
    """A tiny Keras CNN built in the TensorFlow converter environment: `net.keras`, the same
    model as a zipped SavedModel `saved.zip`, and `reference.npz` (x, Keras outputs y)."""
    from compress_engine.export.tflite import converter_python

    python = converter_python()
    if python is None or not python.is_file():
        pytest.skip("the TensorFlow converter environment (.venv-tflite) is not installed")
    folder = tmp_path_factory.mktemp("keras")
    subprocess.run(
        [str(python), "-c", _KERAS_BUILDER, str(folder)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return folder


@pytest.fixture
def image_folder_dataset(project, owner, tmp_path):
    """A labelled image-folder dataset (.zip): 8x8 grayscale PNG digits in folders 0-9, 30
    each (scikit-learn's first of each digit), ingested through the real upload service."""
    from image_folders import digits_zip
    from registry.services import ingest_dataset_upload

    content, _ = digits_zip(tuple(range(10)), per_class=30)
    path = tmp_path / "digit-folders.zip"
    path.write_bytes(content)
    return _ingest(ingest_dataset_upload, project, owner, path)
