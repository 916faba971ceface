"""Dataset uploads with a `__modelpress__` manifest: a stateful model's arrays (state with its
samples on axis 1, a scalar sample rate) are accepted, recorded and shown; a manifest that
names what is not there is refused before anything is stored (issue 16, item 5)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conftest import storage_files
from registry.models import Dataset

pytestmark = pytest.mark.django_db


def _streaming_npz(manifest: dict) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        input=rng.standard_normal((12, 512)).astype(np.float32),
        state=np.zeros((2, 12, 128), np.float32),
        sr=np.int64(16000),
        __modelpress__=json.dumps(manifest),
    )
    return buffer.getvalue()


def _upload(client, project, content: bytes):
    return client.post(
        reverse("registry-dataset-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile("stream.npz", content)},
    )


def test_it_accepts_a_manifest_dataset_and_shows_its_axes(client, owner, project):
    client.force_login(owner.user)

    response = _upload(client, project, _streaming_npz({"sample_axis": {"state": 1}}))

    assert response.status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.samples == 12
    assert dataset.arrays["state"]["sample_axis"] == 1 and dataset.arrays["sr"]["constant"]
    assert "__modelpress__" not in dataset.arrays
    page = client.get(reverse("registry-dataset", args=[dataset.uuid])).content.decode()
    assert "samples on axis 1" in page and "constant" in page


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"sample_axis": {"hidden": 1}}, "names &#x27;hidden&#x27;"),
        ({"sample_axis": {"state": 5}}, "axes run from 0 to 2"),
        ({}, "same number of samples"),
    ],
)
def test_it_refuses_a_bad_manifest_and_leaves_nothing_behind(
    client, owner, project, manifest, message
):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, _streaming_npz(manifest))

    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Dataset.objects.exists() and storage_files() == before
