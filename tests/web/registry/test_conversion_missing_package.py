"""A .pt2 upload on a server without onnxscript: the version fails with a message that names
the missing package and sends the user to the administrator, never "fix the model"."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from jobrunner.ingest import convert_model_version
from registry.models import ModelVersion
from runtime_env import blocking_env

pytestmark = pytest.mark.django_db


def test_it_tells_the_user_the_server_lacks_a_package(
    client, owner, project, torch_model_files, tmp_path: Path, monkeypatch
):
    client.force_login(owner.user)
    pt2 = torch_model_files["export"]
    client.post(
        reverse("registry-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile(pt2.name, pt2.read_bytes()), "input_shapes": ""},
    )
    version = ModelVersion.objects.get(project=project)
    # The converter subprocess inherits this environment: onnxscript is missing there.
    for key, value in blocking_env(tmp_path / "site", modules=("onnxscript",)).items():
        monkeypatch.setenv(key, value)

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "failed"
    assert version.status_message.startswith(
        "This server cannot convert torch.export (.pt2) files: the Python package 'onnxscript' "
        "is missing; ask the administrator to install it"
    )
    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()
    assert "conversion-error" in page and "the administrator" in page
    assert "Fix the model" not in page
