"""The `modelpress` CLI against a live server: login, upload, submit, status --wait with a
real Celery worker, download; and its errors for a server that is down, a bad token, an
unknown id, a failed job."""

from __future__ import annotations

import io
import json
import socket
import stat
import uuid
import zipfile
from pathlib import Path

import pytest
import yaml
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser

from accounts.models import AuditEvent
from compress_engine.cli import main
from compress_engine.remote import EXIT_JOB_FAILED
from compress_engine.remote_client import Client, multipart_body, normalize_server, sha256_of
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def config_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("MODELPRESS_CONFIG_DIR", str(folder))
    monkeypatch.delenv("MODELPRESS_TOKEN", raising=False)
    monkeypatch.delenv("MODELPRESS_SERVER", raising=False)
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.integration
def test_it_runs_a_job_from_the_command_line(
    live_server, worker, config_dir, owner, project, token_for, tiny_cnn_onnx, fast_recipe,
    tmp_path, capsys,
):  # fmt: skip
    token = token_for(owner)
    code, out, err = _run(capsys, "login", "--server", live_server.url, "--token", token)
    assert code == 0, err
    assert f"as {owner.user.username}" in out
    saved = config_dir / "credentials.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == {"server": live_server.url, "token": token}

    # By the project's name; only the new id goes to stdout.
    code, out, err = _run(capsys, "upload", project.name, str(tiny_cnn_onnx), "--name", "cnn")
    assert code == 0, err
    version_id = out.strip()
    assert "cnn v1: ready" in err

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(fast_recipe))
    code, out, err = _run(capsys, "submit", version_id, "--recipe", str(recipe))
    assert code == 0, err
    job_id = out.strip()
    job = Job.objects.get(uuid=job_id)
    assert str(job.model_version.uuid) == version_id and job.created_by == owner.user

    code, out, err = _run(
        capsys, "status", job_id, "--wait", "--interval", "0.5", "--timeout", "240"
    )
    assert code == 0, f"{out}\n{err}\n{worker.log()[-3000:]}"
    assert f"job {job_id}: succeeded (100%" in out
    assert "succeeded: Done" in err  # the progress lines while waiting
    job.refresh_from_db()
    artifacts = {a.name: a.sha256 for a in job.artifacts.all()}
    assert artifacts and all(name in out for name in artifacts)

    out_dir = tmp_path / "downloads"
    code, out, err = _run(capsys, "download", job_id, "--out", str(out_dir))
    assert code == 0, err
    written = {Path(line).name for line in out.split()}
    assert written == {*artifacts, "report.json"}
    for name, sha256 in artifacts.items():
        assert sha256_of(out_dir / name) == sha256
    assert json.loads((out_dir / "report.json").read_text()) == job.report
    assert not list(out_dir.glob(".*.part"))

    code, out, err = _run(capsys, "download", job_id, "--out", str(tmp_path / "b"), "--bundle")
    assert code == 0, err
    with zipfile.ZipFile(out.strip()) as bundle:
        assert bundle.testzip() is None and "report.json" in bundle.namelist()

    downloads = AuditEvent.objects.filter(action="downloaded", actor=owner.user)
    assert downloads.count() == len(artifacts) + 2  # artifacts, report, bundle


def test_it_explains_a_server_that_is_not_there(config_dir, capsys):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _out, err = _run(
        capsys, "login", "--server", f"http://127.0.0.1:{port}", "--token", "mp_x_y"
    )
    assert code == 2
    assert "connection refused" in err and "Traceback" not in err
    assert not (config_dir / "credentials.json").exists()


def test_it_refuses_to_save_a_bad_token(live_server, config_dir, capsys):
    code, _out, err = _run(capsys, "login", "--server", live_server.url, "--token", "mp_bad_x")
    assert code == 2
    assert "refused the token (401)" in err
    assert not (config_dir / "credentials.json").exists()


def test_it_asks_to_log_in_first(config_dir, capsys):
    code, _out, err = _run(capsys, "status", str(uuid.uuid4()))
    assert code == 2 and "Not logged in" in err


def test_it_says_not_found_and_exits_3_for_a_failed_job(
    live_server, config_dir, owner, token_for, model_version, capsys, monkeypatch
):
    from factories import JobFactory

    monkeypatch.setenv("MODELPRESS_SERVER", live_server.url)
    monkeypatch.setenv("MODELPRESS_TOKEN", token_for(owner))
    code, _out, err = _run(capsys, "status", str(uuid.uuid4()))
    assert code == 2 and "Not found (404)" in err

    code, _out, err = _run(capsys, "status", "not-a-job")
    assert code == 2 and "not a job id" in err

    job = JobFactory(model_version=model_version)
    assert job.fail("The model has an operator the engine cannot read.")
    code, out, _err = _run(capsys, "status", str(job.uuid), "--wait")
    assert code == EXIT_JOB_FAILED
    assert "failed" in out and "operator the engine cannot read" in out

    code, _out, err = _run(capsys, "download", str(job.uuid))
    assert code == 2 and "only a succeeded job" in err

    code, _out, err = _run(capsys, "upload", "No such project", str(Path(__file__)))
    assert code == 2 and "No project named" in err


def test_it_builds_a_multipart_body_of_the_announced_length(tmp_path):
    file = tmp_path / "model name.onnx"
    file.write_bytes(b"\x00\x01" * 300_000)
    content_type, length, chunks = multipart_body(file, {"name": "résumé"})
    body = b"".join(chunks)
    assert len(body) == length
    parser = MultiPartParser(
        {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(length)},
        io.BytesIO(body),
        [MemoryFileUploadHandler()],
    )
    post, files = parser.parse()
    assert post["name"] == "résumé"
    assert files["file"].name == "model name.onnx" and files["file"].read() == file.read_bytes()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("localhost:8000", "http://localhost:8000"),
        ("https://mp.example/", "https://mp.example"),
        ("https://mp.example/sub/api/v1/", "https://mp.example/sub"),
    ],
)
def test_it_normalizes_the_server_address(given, expected):
    assert normalize_server(given) == expected


@pytest.mark.parametrize(
    ("server", "path", "url"),
    [
        ("http://h:8000", "/jobs/1", "http://h:8000/api/v1/jobs/1"),
        (
            "http://h:8000",
            "/api/v1/artifacts/1/download",
            "http://h:8000/api/v1/artifacts/1/download",
        ),
        (
            "https://h/sub",
            "/sub/api/v1/artifacts/1/download",
            "https://h/sub/api/v1/artifacts/1/download",
        ),
        ("https://h/sub", "/me", "https://h/sub/api/v1/me"),
    ],
)
def test_it_addresses_api_paths_and_handed_out_urls(server, path, url):
    assert Client(server, "mp_x").url(path) == url
