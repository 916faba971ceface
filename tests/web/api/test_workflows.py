"""The API's workflows through the same services as the web UI: uploads, projects, jobs,
cancel, report and downloads with their audit events; and its errors, as JSON with the
status a client can act on."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from accounts.models import AuditEvent
from conftest import storage_files
from jobs.bundles import bundle_name
from jobs.models import Job
from registry.models import Dataset, ModelVersion, Project

pytestmark = pytest.mark.django_db


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_it_uploads_a_model_and_a_dataset_and_starts_a_job(
    api_as, member, project, tiny_cnn_onnx, pattern_npz, fast_recipe
):
    api = api_as(member)
    response = api.post_file(f"/projects/{project.uuid}/models", tiny_cnn_onnx)
    assert response.status_code == 201, response.content
    body = response.json()
    version = ModelVersion.objects.get(uuid=body["id"])
    assert (body["name"], body["version"], body["status"]) == ("tiny_cnn", 1, "ready")
    assert body["sha256"] == _sha256(tiny_cnn_onnx.read_bytes()) == version.sha256
    assert body["inputs"] and body["uploaded_by"] == member.user.username

    response = api.post_file(f"/projects/{project.uuid}/datasets", pattern_npz, name="digits")
    assert response.status_code == 201, response.content
    dataset = Dataset.objects.get(uuid=response.json()["id"])
    assert (dataset.name, dataset.samples, response.json()["samples"]) == ("digits", 400, 400)

    recipe = {**fast_recipe, "steps": [{"quantize": {"mode": "static-int8", "samples": 16}}]}
    response = api.post_json(
        f"/models/{version.uuid}/jobs", {"recipe": recipe, "dataset": str(dataset.uuid)}
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(uuid=response.json()["id"])
    assert (job.status, job.dataset, job.created_by) == ("queued", dataset, member.user)
    assert job.recipe["steps"][0]["quantize"]["mode"] == "static-int8"
    assert response.json()["summary"] is None and response.json()["artifacts"] == []
    assert response.json()["queue"] == job.queue != ""
    assert (response.json()["worker"], response.json()["device"]) == ("", "")

    actions = list(
        AuditEvent.objects.filter(team=project.team, actor=member.user)
        .order_by("created_at", "id")
        .values_list("action", flat=True)
    )
    assert actions == ["uploaded_model", "uploaded_dataset", "started_job"]


def test_it_starts_a_job_from_yaml_text_or_a_preset(api_as, owner, model_version, dataset):
    api = api_as(owner)
    yaml_recipe = "version: 1\nsteps:\n  - quantize: {mode: dynamic-int8}\n"
    response = api.post_json(f"/models/{model_version.uuid}/jobs", {"recipe": yaml_recipe})
    assert response.status_code == 201, response.content
    response = api.post_json(
        f"/models/{model_version.uuid}/jobs",
        {"preset": "static-int8", "dataset": str(dataset.uuid)},
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(uuid=response.json()["id"])
    assert job.recipe["steps"][0]["quantize"]["mode"] == "static-int8"
    presets = {p["name"] for p in api.get("/presets").json()}
    assert "static-int8" in presets


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"recipe": {"steps": [{"quantize": {"mode": "int3"}}]}}, 400, "int3"),
        ({"recipe": "steps: [unclosed"}, 400, "YAML"),
        ({"preset": "no-such-preset"}, 400, "Unknown preset"),
        ({"preset": "static-int8"}, 400, "dataset"),
        ({"recipe": {"steps": []}, "preset": "static-int8"}, 422, "not both"),
        ({"recipe": {"steps": [{"prune": {"ignore": ["a\x00"]}}]}}, 422, "NUL"),
        ({"dataset": "not-a-uuid"}, 422, "dataset"),
        ({"recipe": 7}, 422, "recipe"),
    ],
)
def test_it_explains_a_job_that_cannot_start(api_as, owner, model_version, payload, status, words):
    response = api_as(owner).post_json(f"/models/{model_version.uuid}/jobs", payload)
    assert response.status_code == status, response.content
    assert words in response.json()["detail"]
    assert not Job.objects.exists()


def test_it_hides_a_dataset_of_another_project(api_as, owner, model_version, team, tmp_path):
    from factories import ProjectFactory

    other = ProjectFactory(team=team)
    foreign = Dataset.objects.create(
        project=other, name="x", original_filename="x.npz", size_bytes=1, sha256="0", samples=1
    )
    response = api_as(owner).post_json(
        f"/models/{model_version.uuid}/jobs", {"dataset": str(foreign.uuid)}
    )
    assert response.status_code == 404 and not Job.objects.exists()


def test_it_answers_429_when_the_team_runs_its_maximum_of_jobs(
    api_as, owner, model_version, queued_job
):
    model_version.project.team.max_concurrent_jobs = 1
    model_version.project.team.save(update_fields=["max_concurrent_jobs"])
    response = api_as(owner).post_json(f"/models/{model_version.uuid}/jobs", {})
    assert response.status_code == 429
    assert "concurrent jobs" in response.json()["detail"]


@pytest.mark.parametrize("route", ["models", "datasets"])
def test_it_answers_413_past_the_teams_storage_quota(
    api_as, owner, project, tiny_cnn_onnx, pattern_npz, route
):
    path = tiny_cnn_onnx if route == "models" else pattern_npz
    project.team.storage_quota_bytes = path.stat().st_size - 1
    project.team.save(update_fields=["storage_quota_bytes"])
    before = storage_files()
    response = api_as(owner).post_file(f"/projects/{project.uuid}/{route}", path)
    assert response.status_code == 413
    assert "storage quota" in response.json()["detail"]
    assert storage_files() == before and not AuditEvent.objects.exists()


def test_it_answers_413_for_a_file_over_the_upload_limit(
    api_as, owner, project, tiny_cnn_onnx, settings
):
    settings.MODELPRESS_MAX_UPLOAD_BYTES = 1024
    response = api_as(owner).post_file(f"/projects/{project.uuid}/models", tiny_cnn_onnx)
    assert response.status_code == 413
    assert "upload limit" in response.json()["detail"]
    assert not ModelVersion.objects.exists()


def test_it_explains_a_file_that_is_not_a_model(api_as, owner, project, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"definitely not a model")
    response = api_as(owner).post_file(f"/projects/{project.uuid}/models", bad)
    assert response.status_code == 400
    assert "ONNX" in response.json()["detail"]
    assert not ModelVersion.objects.exists()


def test_it_says_which_field_is_missing(api_as, owner, project):
    response = api_as(owner).client.post(
        f"/api/v1/projects/{project.uuid}/models",
        {"name": "no file"},
        headers={"Authorization": api_as(owner)._headers()["Authorization"]},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == "Invalid request: file: Field required."
    assert response.json()["errors"][0]["loc"] == ["file", "file"]


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"name": "Vision"}, 201, ""),
        ({"name": "   "}, 422, "blank"),
        ({"name": "x" * 101}, 422, "100"),
        ({"name": "nul\x00"}, 422, "NUL"),
        ({}, 422, "name: Field required"),
        ({"name": "Other", "team": "00000000-0000-0000-0000-000000000000"}, 404, "team"),
    ],
)
def test_it_creates_a_project_or_says_why_not(api_as, owner, team, payload, status, words):
    payload = {"team": str(team.uuid), **payload}
    response = api_as(owner).post_json("/projects", payload)
    assert response.status_code == status, response.content
    if status == 201:
        project = Project.objects.get(uuid=response.json()["id"])
        assert (project.team, project.name, response.json()["team"]["id"]) == (
            team,
            "Vision",
            str(team.uuid),
        )
    else:
        assert words in response.json()["detail"]


def test_it_answers_409_to_a_taken_project_name(api_as, owner, project):
    payload = {"name": project.name, "team": str(project.team.uuid)}
    response = api_as(owner).post_json("/projects", payload)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


def test_it_creates_a_project_in_the_personal_team_by_default(api_as):
    from accounts.services import create_user_with_personal_team

    user = create_user_with_personal_team(username="solo", email="s@example.com", password="x")
    response = api_as(user).post_json("/projects", {"name": "Mine"})
    assert response.status_code == 201
    assert response.json()["team"]["name"] == "solo's team"


def test_it_answers_json_for_a_bad_id_and_bad_json(api_as, owner):
    api = api_as(owner)
    response = api.get("/jobs/not-a-uuid")
    assert response.status_code == 422 and "job_uuid" in response.json()["detail"]
    response = api.client.post(
        "/api/v1/projects",
        data="{not json",
        content_type="application/json",
        headers=api._headers(),
    )
    assert response.status_code == 400 and response.json()["detail"]
    response = api.get("/projects?limit=0")
    assert response.status_code == 422 and "limit" in response.json()["detail"]
    response = api.get("/projects?offset=99999999999999999999")
    assert response.status_code == 422


def test_it_reports_a_finished_job_and_records_every_download(
    api_as, viewer, finished_job, engine_run
):
    report, out_dir = engine_run
    api = api_as(viewer)
    job = api.get(f"/jobs/{finished_job.uuid}").json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0
    assert job["summary"]["result_size_bytes"] == report.result.size_bytes
    assert job["summary"]["size_ratio"] == pytest.approx(report.size_ratio)
    assert [a["name"] for a in job["artifacts"]] == [a.name for a in report.files]

    artifact = job["artifacts"][0]
    response = api.client.get(artifact["download_url"], headers=api._headers())
    assert response.status_code == 200 and response.streaming
    content = b"".join(response.streaming_content)
    assert content == (out_dir / artifact["name"]).read_bytes()
    assert _sha256(content) == artifact["sha256"]
    assert artifact["name"] in response["Content-Disposition"]

    response = api.get(f"/jobs/{finished_job.uuid}/bundle")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))).namelist()
    assert "report.json" in names and f"models/{artifact['name']}" in names

    response = api.get(f"/jobs/{finished_job.uuid}/report")
    assert response.json()["result"]["size_bytes"] == report.result.size_bytes

    events = AuditEvent.objects.filter(action="downloaded", actor=viewer.user).order_by("id")
    assert [e.detail["file"] for e in events] == [
        artifact["name"],
        bundle_name(finished_job),
        f"report-{finished_job.uuid}.json",
    ]
    assert {e.detail["job"] for e in events} == {str(finished_job.uuid)}


def test_it_has_no_report_or_bundle_before_success(api_as, owner, queued_job):
    api = api_as(owner)
    assert api.get(f"/jobs/{queued_job.uuid}/report").status_code == 404
    response = api.get(f"/jobs/{queued_job.uuid}/bundle")
    assert response.status_code == 404 and "queued" in response.json()["detail"]
    assert api.get(f"/jobs/{queued_job.uuid}/artifacts").json() == []
    assert not AuditEvent.objects.filter(action="downloaded").exists()


def test_it_cancels_a_queued_job_once(api_as, member, queued_job):
    api = api_as(member)
    response = api.post_json(f"/jobs/{queued_job.uuid}/cancel")
    assert response.status_code == 200
    assert response.json()["cancelled"] and response.json()["job"]["status"] == "cancelled"
    assert AuditEvent.objects.filter(action="cancelled_job", actor=member.user).count() == 1
    response = api.post_json(f"/jobs/{queued_job.uuid}/cancel")
    assert response.status_code == 409 and "already ended" in response.json()["detail"]


def test_it_lists_jobs_with_a_status_filter_and_pages(
    api_as, owner, project, queued_job, finished_job
):
    api = api_as(owner)
    listed = api.get(f"/projects/{project.uuid}/jobs").json()
    assert listed["count"] == 2
    assert [j["id"] for j in listed["items"]] == [str(finished_job.uuid), str(queued_job.uuid)]
    only = api.get(f"/projects/{project.uuid}/jobs?status=queued").json()
    assert [j["id"] for j in only["items"]] == [str(queued_job.uuid)]
    page = api.get(f"/projects/{project.uuid}/jobs?limit=1&offset=1").json()
    assert page["count"] == 2 and [j["id"] for j in page["items"]] == [str(queued_job.uuid)]
    assert api.get(f"/projects/{project.uuid}/jobs?status=lost").status_code == 422


def test_it_describes_the_caller_and_their_roles(api_as, viewer, team):
    me = api_as(viewer).get("/me").json()
    assert me["username"] == viewer.user.username
    assert me["teams"] == [
        {"id": str(team.uuid), "name": team.name, "is_personal": False, "role": "viewer",
         "can_write": False}
    ]  # fmt: skip
