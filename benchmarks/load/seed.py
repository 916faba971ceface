"""Seed the load test's database through the platform's own services, then keep jobs running.

Run by benchmarks.load (`python -m benchmarks.load.seed seed|feed`) with the stack's
environment, so it writes the same database and queue the web and worker processes use:
- `seed`: teams of users, a project and a real ONNX model per team, a few real jobs per team
  (run by the worker, so dashboards show real reports), and a logged-in session per user;
  writes the users file the locustfile reads.
- `feed`: until it is stopped, starts a new job for every team whose last job finished, so
  jobs run (and their status pages change) while the load is measured.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import import_module
from pathlib import Path

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.core.files.uploadedfile import TemporaryUploadedFile  # noqa: E402

from accounts.models import Membership, Team, User  # noqa: E402
from jobs.models import Job  # noqa: E402
from jobs.services import create_job  # noqa: E402
from registry.services import create_project, ingest_model_upload  # noqa: E402

# A quick job: one real dynamic int8 run with short timing, a few seconds on this machine.
RECIPE = {
    "steps": [{"quantize": {"mode": "dynamic-int8"}}],
    "evaluate": {"latency_runs": 5, "warmup": 1, "batch_sizes": [], "fidelity_samples": 4},
}


def _mlp_onnx(seed: int) -> bytes:
    """A small MLP [batch, 64] -> [batch, 10] with seeded weights."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.normal(0, 0.1, (64, 256)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.1, (256, 10)).astype(np.float32), "w2")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["logits"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _session_key(user: User) -> str:
    """A logged-in session, as django.contrib.auth.login would store it."""
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key


def _wait_for(jobs: list[Job], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = {j.pk for j in jobs}
    while pending and time.monotonic() < deadline:
        done = Job.objects.filter(pk__in=pending, status__in=Job.TERMINAL)
        pending -= set(done.values_list("pk", flat=True))
        time.sleep(0.5)
    if pending:
        raise SystemExit(f"{len(pending)} seed job(s) did not finish in {timeout:.0f} s")
    failed = Job.objects.filter(pk__in=[j.pk for j in jobs]).exclude(status=Job.Status.SUCCEEDED)
    if failed.exists():
        raise SystemExit(f"seed job failed: {failed.first().error}")


def seed(users_file: Path, *, teams: int, users_per_team: int, jobs_per_team: int) -> None:
    rows, started = [], []
    for t in range(teams):
        owner = None
        team = Team.objects.create(name=f"Load team {t}")
        members = []
        for u in range(users_per_team):
            user = User.objects.create_user(
                username=f"load{t}-{u}", email=f"load{t}-{u}@example.com", password=None
            )
            role = Membership.Role.OWNER if u == 0 else Membership.Role.MEMBER
            Membership.objects.create(team=team, user=user, role=role)
            owner = owner or user
            members.append(user)
        project = create_project(team=team, user=owner, name=f"Load project {t}")
        # As Django hands over a streamed upload: a temporary file on disk.
        data = _mlp_onnx(t)
        upload = TemporaryUploadedFile(f"mlp{t}.onnx", "application/octet-stream", len(data), None)
        upload.write(data)
        upload.flush()
        try:
            version = ingest_model_upload(project=project, user=owner, upload=upload)
        finally:
            upload.close()
        jobs = [
            create_job(model_version=version, user=owner, recipe=RECIPE)
            for _ in range(jobs_per_team)
        ]
        started.extend(jobs)
        rows.extend(
            {
                "session": _session_key(user),
                "project": str(project.uuid),
                "version": str(version.uuid),
                "jobs": [str(j.uuid) for j in jobs],
            }
            for user in members
        )
    _wait_for(started, timeout=600)
    users_file.write_text(json.dumps({"cookie": settings.SESSION_COOKIE_NAME, "users": rows}))
    print(f"seeded {len(rows)} users in {teams} teams, {len(started)} jobs run", flush=True)


def feed(users_file: Path, current_file: Path) -> None:
    """Keep one job per team queued or running, and `current_file` naming it per project;
    runs until the process is terminated."""
    rows = json.loads(users_file.read_text())["users"]
    projects = {row["project"]: row["version"] for row in rows}
    current: dict[str, str] = {}
    started = 0
    while True:
        for project, version in projects.items():
            jobs = Job.objects.filter(model_version__uuid=version)
            busy = jobs.exclude(status__in=Job.TERMINAL).order_by("-created_at").first()
            if busy is None:
                last = jobs.latest("created_at")
                busy = create_job(
                    model_version=last.model_version, user=last.created_by, recipe=RECIPE
                )
                started += 1
            current[project] = str(busy.uuid)
        partial = current_file.with_suffix(".partial")
        partial.write_text(json.dumps(current))
        partial.replace(current_file)  # atomic: readers never see half a file
        print(f"feed: {started} jobs started", flush=True)
        time.sleep(1.0)


if __name__ == "__main__":
    command, path = sys.argv[1], Path(sys.argv[2])
    if command == "seed":
        seed(
            path,
            teams=int(sys.argv[3]),
            users_per_team=int(sys.argv[4]),
            jobs_per_team=int(sys.argv[5]),
        )
    else:
        feed(path, Path(sys.argv[3]))
