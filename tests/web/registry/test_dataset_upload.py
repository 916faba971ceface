from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conftest import storage_files
from registry.models import Dataset

pytestmark = pytest.mark.django_db


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _upload(client, project, name: str, content: bytes):
    return client.post(
        reverse("registry-dataset-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile(name, content)},
    )


def test_it_records_the_arrays_samples_and_labels(client, owner, project):
    client.force_login(owner.user)
    x = np.random.default_rng(0).standard_normal((20, 1, 8, 8)).astype(np.float32)
    y = np.arange(20) % 10

    response = _upload(client, project, "digits-calib.npz", _npz(x=x, y=y))

    assert response.status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.name == "digits-calib" and dataset.samples == 20
    assert dataset.arrays == {
        "x": {"shape": [20, 1, 8, 8], "dtype": "float32"},
        "y": {"shape": [20], "dtype": "int64"},
    }
    assert dataset.label_array == "y" and dataset.has_labels
    page = client.get(reverse("registry-project", args=[project.uuid])).content.decode()
    assert "digits-calib" in page and "[20, 1, 8, 8]" in page


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("objects.npz", _npz(x=np.array([{"a": 1}, None], dtype=object)), "python objects"),
        ("uneven.npz", _npz(x=np.zeros((5, 3)), y=np.zeros(4, dtype=np.int64)), "same number"),
        ("floatlabels.npz", _npz(x=np.zeros((4, 3)), y=np.zeros(4)), "integer array"),
        ("onlylabels.npz", _npz(y=np.zeros(4, dtype=np.int64)), "no inputs"),
        ("pickled.npz", pickle.dumps({"x": [1, 2, 3]}), "not a numpy .npz"),
        ("data.csv", b"1,2,3\n", ".npz files"),
    ],
)
def test_it_rejects_a_bad_dataset_and_leaves_nothing_behind(
    client, owner, project, name, content, message
):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, name, content)

    assert response.status_code == 422
    assert message in response.content.decode().lower()
    assert not Dataset.objects.exists()
    assert storage_files() == before


def test_it_forbids_viewers_to_upload_datasets(client, viewer, project):
    client.force_login(viewer.user)
    response = _upload(client, project, "d.npz", _npz(x=np.zeros((2, 3))))
    assert response.status_code == 403
    assert not Dataset.objects.exists()


def test_it_refuses_to_start_a_job_with_another_projects_dataset(
    client, owner, model_version, team
):
    from factories import ProjectFactory
    from jobs.models import Job

    other = ProjectFactory(team=team)
    foreign = Dataset.objects.create(
        project=other, name="elsewhere", size_bytes=1, sha256="0", samples=1, file="x.npz"
    )
    client.force_login(owner.user)
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]), {"dataset": str(foreign.uuid)}
    )
    assert response.status_code == 404
    assert not Job.objects.exists()
