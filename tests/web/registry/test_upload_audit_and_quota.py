"""Uploads in the team audit log, and the team storage quota enforced at upload."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import AuditEvent
from conftest import storage_files
from registry.models import Dataset, ModelVersion

pytestmark = pytest.mark.django_db


def _post(client, url_name: str, project, path):
    return client.post(
        reverse(url_name, args=[project.uuid]),
        {"file": SimpleUploadedFile(path.name, path.read_bytes())},
    )


def test_it_records_model_and_dataset_uploads(client, member, project, tiny_cnn_onnx, pattern_npz):
    client.force_login(member.user)

    _post(client, "registry-upload", project, tiny_cnn_onnx)
    _post(client, "registry-dataset-upload", project, pattern_npz)

    version, dataset = ModelVersion.objects.get(), Dataset.objects.get()
    events = AuditEvent.objects.filter(team=project.team).order_by("created_at")
    assert [(e.action, e.actor, e.target_id) for e in events] == [
        (AuditEvent.Action.UPLOADED_MODEL, member.user, str(version.uuid)),
        (AuditEvent.Action.UPLOADED_DATASET, member.user, str(dataset.uuid)),
    ]
    assert events[0].detail == {
        "file": tiny_cnn_onnx.name,
        "format": "onnx",
        "bytes": tiny_cnn_onnx.stat().st_size,
    }


@pytest.mark.parametrize("url_name", ["registry-upload", "registry-dataset-upload"])
def test_it_refuses_an_upload_past_the_teams_storage_quota(
    client, owner, project, tiny_cnn_onnx, pattern_npz, url_name
):
    path = tiny_cnn_onnx if url_name == "registry-upload" else pattern_npz
    project.team.storage_quota_bytes = path.stat().st_size - 1
    project.team.save(update_fields=["storage_quota_bytes"])
    client.force_login(owner.user)
    before = storage_files()

    response = _post(client, url_name, project, path)

    assert response.status_code == 422
    assert "storage" in response.content.decode().lower()
    assert not ModelVersion.objects.exists() and not Dataset.objects.exists()
    assert storage_files() == before
    assert not AuditEvent.objects.exists()
