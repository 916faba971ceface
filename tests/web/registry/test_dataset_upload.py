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


# --- image-folder zips ---------------------------------------------------------------------


def _names(digit: int) -> str:
    return ["zero", "one", "two"][digit]


def test_it_records_classes_size_channels_and_pixel_statistics_of_an_image_zip(
    client, owner, project
):
    from accounts.models import AuditEvent
    from image_folders import digits_zip

    client.force_login(owner.user)
    content, pixels = digits_zip((0, 1, 2), per_class=6, folder=_names)

    response = _upload(client, project, "digits.zip", content)

    assert response.status_code == 302, response.content.decode()[:2000]
    dataset = Dataset.objects.get(project=project)
    assert dataset.kind == Dataset.Kind.IMAGES and dataset.is_image_folder
    assert dataset.name == "digits" and dataset.samples == 18
    # Sorted folder names are the class ids, as the engine numbers them; the README and the
    # Finder metadata are not images of any class.
    assert dataset.classes == [
        {"name": "one", "count": 6},
        {"name": "two", "count": 6},
        {"name": "zero", "count": 6},
    ]
    assert dataset.has_labels and dataset.arrays == {}
    assert (dataset.image_width, dataset.image_height, dataset.image_sizes_vary) == (8, 8, False)
    assert dataset.image_channels == "L"
    values = np.stack([p for images in pixels.values() for p in images]).astype(np.float64) / 255
    for mode in ("L", "RGB"):
        stats = dataset.image_stats[mode]
        channels = 1 if mode == "L" else 3
        assert stats["mean"] == pytest.approx([values.mean()] * channels, abs=1e-6)
        assert stats["std"] == pytest.approx([values.std()] * channels, abs=1e-6)
    assert dataset.image_normalisation(1) == (
        dataset.image_stats["L"]["mean"],
        dataset.image_stats["L"]["std"],
    )
    assert len(dataset.previews) == 12  # four per class
    assert {p["label"] for p in dataset.previews} == {"zero", "one", "two"}
    # Stored under a fixed name whose suffix tells the worker (and the engine) what it is.
    assert dataset.file.name.endswith("/data.zip") and dataset.stored_suffix == ".zip"
    with dataset.file.open("rb") as stored:
        assert stored.read() == content
    event = AuditEvent.objects.get(action="uploaded_dataset")
    assert event.detail["kind"] == "images" and event.detail["file"] == "digits.zip"
    page = client.get(reverse("registry-project", args=[project.uuid])).content.decode()
    assert reverse("registry-dataset", args=[dataset.uuid]) in page
    assert "3 class folders" in page


def test_it_records_colour_images_of_varying_sizes(client, owner, project):
    from image_folders import png, zip_bytes

    client.force_login(owner.user)
    rng = np.random.default_rng(3)
    images = {
        "cats/1.png": rng.integers(0, 256, (12, 10, 3), dtype=np.uint8),
        "cats/2.png": rng.integers(0, 256, (12, 10, 3), dtype=np.uint8),
        "dogs/1.png": rng.integers(0, 256, (6, 7, 3), dtype=np.uint8),
    }

    response = _upload(
        client, project, "pets.zip", zip_bytes({n: png(p) for n, p in images.items()})
    )

    assert response.status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.image_channels == "RGB"
    assert (dataset.image_width, dataset.image_height) == (10, 12)  # the most common size
    assert dataset.image_sizes_vary
    flat = np.concatenate([p.reshape(-1, 3) for p in images.values()]).astype(np.float64) / 255
    assert dataset.image_stats["RGB"]["mean"] == pytest.approx(list(flat.mean(0)), abs=1e-6)
    assert dataset.image_stats["RGB"]["std"] == pytest.approx(list(flat.std(0)), abs=1e-6)
    assert dataset.classes == [{"name": "cats", "count": 2}, {"name": "dogs", "count": 1}]


def test_it_accepts_one_class_folder_as_unlabelled_calibration_data(client, owner, project):
    from image_folders import digits_zip

    client.force_login(owner.user)
    content, _ = digits_zip((5,), per_class=3)

    assert _upload(client, project, "calib.zip", content).status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.samples == 3 and dataset.classes == [{"name": "5", "count": 3}]
    assert not dataset.has_labels


def _link_zip() -> bytes:
    import zipfile

    from image_folders import digits_zip

    content, _ = digits_zip((0, 1), per_class=1)
    buffer = io.BytesIO(content)
    with zipfile.ZipFile(buffer, "a") as archive:
        link = zipfile.ZipInfo("1/secret.png")
        link.external_attr = (0o120777 & 0xFFFF) << 16  # a symlink, as `zip --symlinks` writes
        archive.writestr(link, "/etc/passwd")
    return buffer.getvalue()


def _huge_image_zip() -> bytes:
    from PIL import Image

    from image_folders import zip_bytes

    # 48 million pixels in a few kB of PNG: refused from its header, before decoding.
    out = io.BytesIO()
    Image.new("1", (8000, 6000)).save(out, format="PNG")
    return zip_bytes({"cats/bomb.png": out.getvalue(), "dogs/ok.png": _one_png()})


def _one_png() -> bytes:
    from image_folders import png

    return png(np.zeros((4, 4), dtype=np.uint8))


def _zip(members: dict[str, bytes]) -> bytes:
    from image_folders import zip_bytes

    return zip_bytes(members)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _zip({"cats/1.png": _one_png(), "../evil/2.png": _one_png()}), "outside"),
        (lambda: _zip({"cats/1.png": _one_png(), "/abs/2.png": _one_png()}), "outside"),
        (_link_zip, "is a link"),
        (_huge_image_zip, "8000x6000 pixels, over the limit"),
        (
            lambda: _zip({"cats/1.png": _one_png(), "cats/broken.png": b"not an image at all"}),
            "could not be read as images: &#x27;cats/broken.png&#x27;",
        ),
        (lambda: _zip({"1.png": _one_png(), "2.png": _one_png()}), "not inside a class folder"),
        (lambda: _zip({"notes.txt": b"hello", "cats/readme.md": b"x"}), "holds no images"),
        (lambda: b"PK\x03\x04 but not really a zip", "not a readable .zip"),
    ],
    ids=["zip-slip", "absolute", "link", "huge-image", "not-images", "no-folders", "empty", "junk"],
)
def test_it_refuses_a_hostile_image_zip_and_leaves_nothing_behind(
    client, owner, project, build, message
):
    client.force_login(owner.user)
    before = storage_files()

    response = _upload(client, project, "images.zip", build())

    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Dataset.objects.exists()
    assert storage_files() == before


def test_it_refuses_a_zip_that_unpacks_past_the_upload_limit(client, owner, project, settings):
    settings.MODELPRESS_MAX_UPLOAD_BYTES = 1_000_000
    client.force_login(owner.user)
    # 2 MB of zeros deflate to a few kB: the declared sizes are checked before any read.
    content = _zip({"cats/1.png": _one_png(), "cats/2.png": bytes(2_000_000)})
    assert len(content) < 100_000

    response = _upload(client, project, "bomb.zip", content)

    assert response.status_code == 422
    assert "unpacks to 2.0 MB, more than the limit of 1.0 MB" in response.content.decode()
    assert not Dataset.objects.exists()


def test_it_records_the_label_histogram_and_image_previews_of_an_npz(client, owner, project):
    client.force_login(owner.user)
    x = np.random.default_rng(0).standard_normal((20, 1, 8, 8)).astype(np.float32)
    y = np.array([0] * 5 + [1] * 12 + [7] * 3)

    assert _upload(client, project, "d.npz", _npz(x=x, y=y)).status_code == 302

    dataset = Dataset.objects.get(project=project)
    assert dataset.kind == Dataset.Kind.NPZ and dataset.stored_suffix == ".npz"
    assert dataset.classes == [
        {"name": "0", "count": 5},
        {"name": "1", "count": 12},
        {"name": "7", "count": 3},
    ]
    assert [p["index"] for p in dataset.previews] == list(range(16))
    assert dataset.previews[6] == {"array": "x", "index": 6, "label": "1"}


def test_it_shows_no_previews_for_arrays_that_are_not_images(client, owner, project):
    client.force_login(owner.user)
    assert _upload(client, project, "t.npz", _npz(x=np.zeros((5, 3)))).status_code == 302
    dataset = Dataset.objects.get(project=project)
    assert dataset.previews == [] and dataset.classes == []
