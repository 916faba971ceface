"""Uploads, jobs, downloads and deletions on S3-compatible object storage.

moto's S3 server, started in this process on 127.0.0.1 (a random port), stands in for MinIO or
AWS: the storage settings are the ones MODELPRESS_S3_* builds in production
(config.settings.default_storage_from_env), boto3 talks HTTP to the server, and nothing
leaves the machine.
"""

from __future__ import annotations

import hashlib
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


@dataclass
class Bucket:
    client: object
    name: str
    endpoint: str

    def objects(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def local_media(settings) -> Path:
    """The filesystem storage's folder (what the default would write to)."""
    return Path(settings.STORAGES["default"]["OPTIONS"]["location"])


@pytest.fixture
def bucket(s3_endpoint, settings, monkeypatch, local_media) -> Bucket:
    """A new empty bucket, made the default storage through the production settings code."""
    import boto3

    from config.settings import default_storage_from_env

    name = f"modelpress-{uuid.uuid4().hex[:12]}"
    for variable, value in {
        "MODELPRESS_S3_BUCKET": name,
        "MODELPRESS_S3_ENDPOINT_URL": s3_endpoint,
        "MODELPRESS_S3_REGION": "us-east-1",
        "MODELPRESS_S3_ACCESS_KEY_ID": "test-access-key",
        "MODELPRESS_S3_SECRET_ACCESS_KEY": "test-secret-key",
    }.items():
        monkeypatch.setenv(variable, value)
    config = default_storage_from_env()
    assert config["BACKEND"] == "storages.backends.s3.S3Storage"
    assert config["OPTIONS"]["addressing_style"] == "path"  # an endpoint of one's own
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test-access-key",
        aws_secret_access_key="test-secret-key",
    )
    client.create_bucket(Bucket=name)
    settings.STORAGES = {**settings.STORAGES, "default": config}
    return Bucket(client, name, s3_endpoint)


def _files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def s3_version(bucket, project, owner, tiny_cnn_onnx):
    """A model version uploaded through the real upload service onto the bucket."""
    from conftest import _ingest
    from registry.services import ingest_model_upload

    return _ingest(ingest_model_upload, project, owner, tiny_cnn_onnx)


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_it_runs_a_job_on_s3_and_serves_and_deletes_its_files_there(
    bucket,
    local_media,
    s3_version,
    owner,
    member,
    outsider,
    fast_recipe,
    tiny_cnn_onnx,
    client,
    django_capture_on_commit_callbacks,
):
    from jobrunner.runner import run_job

    local_before = _files(local_media)
    version = s3_version
    assert version.file.name in bucket.objects()
    assert _sha256(bucket.read(version.file.name)) == _sha256(tiny_cnn_onnx.read_bytes())

    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        recipe=fast_recipe,
        created_by=owner.user,
    )
    run_job(str(job.uuid), task_id="t-s3", worker="w@test")  # fetches the model from the bucket

    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED, job.error
    artifacts = list(job.artifacts.all())
    assert artifacts
    stored = bucket.objects()
    for artifact in artifacts:
        assert artifact.file.name in stored
        assert _sha256(bucket.read(artifact.file.name)) == artifact.sha256
    assert _files(local_media) == local_before  # nothing went to the local media folder

    # A member's download: the audit event, then a 302 to a short-lived presigned URL that
    # anyone can GET (no session, no keys) for the artifact's exact bytes.
    artifact = artifacts[0]
    client.force_login(member.user)
    response = client.get(reverse("jobs-artifact", args=[artifact.uuid]))
    assert response.status_code == 302
    url = response["Location"]
    assert url.startswith(f"{bucket.endpoint}/{bucket.name}/")
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["60"]
    assert "no-store" in response["Cache-Control"]
    with urllib.request.urlopen(url, timeout=30) as fetched:
        assert _sha256(fetched.read()) == artifact.sha256
        assert artifact.name in fetched.headers["Content-Disposition"]
    event = AuditEvent.objects.get(action=AuditEvent.Action.DOWNLOADED)
    assert event.actor == member.user and event.target_id == str(artifact.uuid)

    # The API streams (its clients hold a token, which must not follow a redirect), and
    # redirects when asked to; another team's user gets a 404 and no URL.
    api_url = reverse("api-v1:download_artifact", args=[artifact.uuid])
    streamed = client.get(api_url)
    assert streamed.status_code == 200
    assert _sha256(b"".join(streamed.streaming_content)) == artifact.sha256
    redirected = client.get(api_url, {"redirect": "true"})
    assert redirected.status_code == 302 and redirected["Location"].startswith(bucket.endpoint)
    client.force_login(outsider.user)
    assert client.get(reverse("jobs-artifact", args=[artifact.uuid])).status_code == 404
    assert client.get(api_url, {"redirect": "true"}).status_code == 404
    assert AuditEvent.objects.filter(action=AuditEvent.Action.DOWNLOADED).count() == 3

    # The bundle is generated on the fly, streamed from the bucket's objects.
    client.force_login(member.user)
    bundle = client.get(reverse("jobs-bundle", args=[job.uuid]))
    assert bundle.status_code == 200 and b"".join(bundle.streaming_content)[:2] == b"PK"

    # Deleting the project removes every object: model, artifacts, job folder.
    with django_capture_on_commit_callbacks(execute=True):
        version.project.delete()
    assert bucket.objects() == []
    assert _files(local_media) == local_before


def test_it_streams_downloads_through_the_app_when_redirects_are_off(
    bucket, s3_version, owner, member, client, settings
):
    from jobrunner.runner import run_job

    settings.MODELPRESS_S3_REDIRECT_DOWNLOADS = False
    version = s3_version
    job = Job.objects.create(
        team=version.project.team,
        project=version.project,
        model_version=version,
        recipe={"version": 1, "steps": [{"quantize": {"mode": "dynamic-int8"}}],
                "evaluate": {"latency_runs": 3, "warmup": 1, "fidelity_samples": 8}},
        created_by=owner.user,
    )  # fmt: skip
    run_job(str(job.uuid))
    artifact = Artifact.objects.get(job=job)
    client.force_login(member.user)

    response = client.get(reverse("jobs-artifact", args=[artifact.uuid]))

    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert _sha256(content) == artifact.sha256
    assert int(response["Content-Length"]) == len(content) == artifact.size_bytes


def test_it_never_overwrites_an_object_and_deletes_whole_folders(bucket, tmp_path):
    from django.core.files.storage import default_storage

    from web.storage import delete_folder, fetch_to_scratch, save_atomically

    first, second = tmp_path / "first.onnx", tmp_path / "second.onnx"
    first.write_bytes(b"first artifact")
    second.write_bytes(b"second artifact")
    folder = f"artifacts/{uuid.uuid4()}/{uuid.uuid4()}"

    stored_first = save_atomically(default_storage, f"{folder}/model.onnx", first)
    stored_second = save_atomically(default_storage, f"{folder}/model.onnx", second)
    nested = save_atomically(default_storage, f"{folder}/extra/left-over.bin", first)
    assert nested in bucket.objects()

    assert stored_first == f"{folder}/model.onnx" and stored_second != stored_first
    assert bucket.read(stored_first) == b"first artifact"
    assert bucket.read(stored_second) == b"second artifact"
    copy = fetch_to_scratch(default_storage, stored_second, tmp_path / "scratch" / "model.onnx")
    assert copy.read_bytes() == b"second artifact"

    delete_folder(default_storage, folder)
    assert bucket.objects() == []  # the nested left-over too


def test_the_readiness_probe_writes_reads_and_deletes_a_probe_object(bucket, client):
    response = client.get(reverse("web-healthz"), {"probe": "ready"})

    storage = response.json()["checks"]["storage"]
    assert storage == {"ok": True, "backend": "s3"}
    assert bucket.objects() == []  # the probe object is gone


def test_the_readiness_probe_fails_when_the_bucket_is_missing(bucket, client):
    bucket.client.delete_bucket(Bucket=bucket.name)

    response = client.get(reverse("web-healthz"), {"probe": "ready"})

    assert response.status_code == 503
    storage = response.json()["checks"]["storage"]
    assert storage["ok"] is False and "NoSuchBucket" in storage["error"]


def test_a_signed_link_redirects_to_the_bucket_too(bucket, s3_version, owner, client):
    from django.core.files.base import ContentFile

    from factories import JobFactory

    job = JobFactory(model_version=s3_version, created_by=owner.user)
    job.claim(worker="w")
    job.succeed({"not": "a full report"})
    artifact = Artifact(job=job, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    client.force_login(owner.user)
    link = client.get(reverse("jobs-artifact-link", args=[artifact.uuid])).context["url"]
    client.logout()

    response = client.get(link)

    assert response.status_code == 302
    with urllib.request.urlopen(response["Location"], timeout=30) as fetched:
        assert fetched.read() == b"abc"
