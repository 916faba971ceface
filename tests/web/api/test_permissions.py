"""Every API route for every persona: the owner succeeds, a viewer reads but cannot write
(403), a user of another team sees nothing (404), and a request without a token is a 401."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from accounts.models import AuditEvent
from conftest import Persona

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {project}, {version}, {job}, {queued}, {artifact}: the team's objects
    owner_status: int
    write: bool = False
    body: str = ""  # "", "project", "job", "model-file", "dataset-file"

    @property
    def names_team_object(self) -> bool:
        # POST /projects names the team in its body.
        return "{" in self.path or self.body == "project"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("GET", "/me", 200),
    Route("GET", "/projects", 200),
    Route("POST", "/projects", 201, write=True, body="project"),
    Route("GET", "/projects/{project}", 200),
    Route("GET", "/projects/{project}/models", 200),
    Route("POST", "/projects/{project}/models", 201, write=True, body="model-file"),
    Route("GET", "/models/{version}", 200),
    Route("GET", "/projects/{project}/datasets", 200),
    Route("POST", "/projects/{project}/datasets", 201, write=True, body="dataset-file"),
    Route("GET", "/presets", 200),
    Route("GET", "/projects/{project}/jobs", 200),
    Route("POST", "/models/{version}/jobs", 201, write=True, body="job"),
    Route("GET", "/jobs/{job}", 200),
    Route("POST", "/jobs/{queued}/cancel", 200, write=True),
    Route("GET", "/jobs/{job}/report", 200),
    Route("GET", "/jobs/{job}/artifacts", 200),
    Route("GET", "/artifacts/{artifact}/download", 200),
    Route("POST", "/artifacts/{artifact}/link", 201),  # viewers may download, so may link
    Route("GET", "/jobs/{job}/bundle", 200),
    # Deletions: owners and admins; refused (409) while a queued job uses the object.
    Route("DELETE", "/jobs/{job}", 204, write=True),
    Route("DELETE", "/datasets/{dataset}", 204, write=True),
    Route("DELETE", "/models/{version}", 409, write=True),
    Route("DELETE", "/projects/{project}", 409, write=True),
]


@pytest.fixture
def objects(team, project, model_version, dataset, finished_job, queued_job) -> dict[str, str]:
    return {
        "team": str(team.uuid),
        "project": str(project.uuid),
        "version": str(model_version.uuid),
        "dataset": str(dataset.uuid),
        "job": str(finished_job.uuid),
        "queued": str(queued_job.uuid),
        "artifact": str(finished_job.artifacts.first().uuid),
    }


def _call(api, route: Route, objects: dict[str, str], files: dict, recipe: dict):
    path = route.path.format(**objects)
    if route.method == "GET":
        return api.get(path)
    if route.method == "DELETE":
        return api.delete(path)
    if route.body == "project":
        return api.post_json(path, {"name": "Made by API", "team": objects["team"]})
    if route.body == "job":
        return api.post_json(path, {"recipe": recipe})
    if route.body == "model-file":
        return api.post_file(path, files["model"], name="from-api")
    if route.body == "dataset-file":
        return api.post_file(path, files["dataset"], name="samples")
    return api.post_json(path)


def _expected(route: Route, persona: str) -> int:
    if persona == "anonymous":
        return 401
    if persona == "outsider" and route.names_team_object:
        return 404
    if persona == "viewer" and route.write:
        return 403
    return route.owner_status


@pytest.mark.parametrize("persona", ["owner", "viewer", "outsider", "anonymous"])
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_it_answers_each_persona_on_every_route(
    request, api_as, objects, route, persona, tiny_cnn_onnx, pattern_npz, fast_recipe
):
    who: Persona | None = None if persona == "anonymous" else request.getfixturevalue(persona)
    files = {"model": tiny_cnn_onnx, "dataset": pattern_npz}
    response = _call(api_as(who), route, objects, files, fast_recipe)
    assert response.status_code == _expected(route, persona), response.content[:500]
    if response.status_code >= 400:
        # Errors are JSON with a message a person can read.
        assert response["Content-Type"].startswith("application/json")
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_it_tests_every_route_of_the_openapi_document(client, owner):
    client.force_login(owner.user)
    document = client.get("/api/v1/openapi.json").json()
    documented = {
        (method.upper(), path.removeprefix("/api/v1"))
        for path, operations in document["paths"].items()
        for method in operations
    }
    tested = {
        (r.method, r.path.replace("{project}", "{project_uuid}")
         .replace("{version}", "{version_uuid}")
         .replace("{dataset}", "{dataset_uuid}")
         .replace("{queued}", "{job_uuid}")
         .replace("{job}", "{job_uuid}")
         .replace("{artifact}", "{artifact_uuid}"))
        for r in ROUTES
    }  # fmt: skip
    assert documented == tested


def test_it_lists_only_the_callers_teams_objects(api_as, owner, outsider, objects):
    as_owner, as_outsider = api_as(owner), api_as(outsider)
    assert objects["project"] in {p["id"] for p in as_owner.get("/projects").json()["items"]}
    assert as_outsider.get("/projects").json() == {"items": [], "count": 0}
    me = as_outsider.get("/me").json()
    assert objects["team"] not in {t["id"] for t in me["teams"]}


def test_it_refuses_a_viewer_without_side_effects(api_as, viewer, objects, queued_job):
    before = AuditEvent.objects.count()
    response = api_as(viewer).post_json(f"/jobs/{objects['queued']}/cancel")
    assert response.status_code == 403
    assert "Viewers" in response.json()["detail"]
    queued_job.refresh_from_db()
    assert queued_job.status == "queued" and AuditEvent.objects.count() == before
