"""Fixtures for the REST API tests: tokens for personas, a bearer-token client, and a team
with one of everything (project, model version, dataset, a succeeded job with artifacts from
a real engine run, a queued job)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

API = "/api/v1"
FAST_RECIPE = {
    "version": 1,
    "steps": [{"quantize": {"mode": "dynamic-int8"}}],
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8},
}


@dataclass
class ApiClient:
    """Django's test client with a bearer token (or none) on every request."""

    client: Any
    token: str | None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.get(API + path, headers=self._headers(), **kwargs)

    def post_json(self, path: str, payload: Any = None) -> Any:
        body = "" if payload is None else json.dumps(payload)
        return self.client.post(
            API + path, data=body, content_type="application/json", headers=self._headers()
        )

    def delete(self, path: str) -> Any:
        return self.client.delete(API + path, headers=self._headers())

    def post_file(self, path: str, file: Path, **fields: str) -> Any:
        with file.open("rb") as handle:
            return self.client.post(API + path, {"file": handle, **fields}, headers=self._headers())


@pytest.fixture
def token_for():
    """The raw API token of a new token for a persona (or a user)."""
    from accounts.tokens import create_token

    def make(persona: Any, name: str = "tests") -> str:
        user = getattr(persona, "user", persona)
        return create_token(user=user, name=name).raw

    return make


@pytest.fixture
def api_as(client, token_for):
    """An ApiClient acting as `persona` through a token; None: no Authorization header."""

    def make(persona: Any | None) -> ApiClient:
        return ApiClient(client, token_for(persona) if persona is not None else None)

    return make


@pytest.fixture(scope="session")
def engine_run(tiny_cnn_onnx, tmp_path_factory):
    """One real engine run for the session: (report, out_dir) for succeeded jobs."""
    from compress_engine import compress

    out_dir = tmp_path_factory.mktemp("api-run") / "out"
    report = compress(tiny_cnn_onnx, FAST_RECIPE, data=None, out_dir=out_dir)
    return report, out_dir


@pytest.fixture
def finished_job(model_version, owner, engine_run):
    """A job that succeeded, with its artifacts stored the way the worker stores them."""
    from jobrunner.runner import _store_results
    from jobs.models import Job

    report, out_dir = engine_run
    job = Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=FAST_RECIPE,
        created_by=owner.user,
    )
    assert job.claim(worker="w@test")
    _store_results(job, report, out_dir)
    job.refresh_from_db()
    assert job.status == "succeeded" and job.artifacts.exists()
    return job


@pytest.fixture
def queued_job(model_version, owner):
    from factories import JobFactory

    return JobFactory(model_version=model_version, created_by=owner.user, recipe=FAST_RECIPE)
