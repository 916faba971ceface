"""The dataset page: facts, class histogram, sample thumbnails; team-scoped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from registry.models import Dataset

pytestmark = pytest.mark.django_db


@pytest.fixture
def image_dataset(client, owner, project):
    """A zip of 8x8 digit PNGs (classes 3, 5, 8; 5 each) uploaded by the owner."""
    from image_folders import digits_zip

    content, pixels = digits_zip((3, 5, 8), per_class=5)
    client.force_login(owner.user)
    response = client.post(
        reverse("registry-dataset-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile("digits.zip", content)},
    )
    assert response.status_code == 302
    client.logout()
    return Dataset.objects.get(project=project), pixels


def _thumbnail(client, dataset, index: int) -> Image.Image:
    response = client.get(reverse("registry-dataset-sample", args=[dataset.uuid, index]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert "private" in response["Cache-Control"]
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG"
    return image


@pytest.mark.parametrize("persona", ["owner", "viewer"])
def test_it_shows_an_image_dataset_to_the_team(client, image_dataset, persona, request):
    dataset, _ = image_dataset
    client.force_login(request.getfixturevalue(persona).user)

    response = client.get(reverse("registry-dataset", args=[dataset.uuid]))

    assert response.status_code == 200
    page = response.content.decode()
    assert "Image folders (.zip)" in page and 'data-testid="dataset-samples">15<' in page
    assert "8×8 (all)" in page and "L (grayscale)" in page
    mean = dataset.image_stats["L"]["mean"][0]
    assert f"<code>{mean}</code>" in page
    rows = [(c["name"], c["count"]) for c in dataset.classes]
    assert rows == [("3", 5), ("5", 5), ("8", 5)]
    for name, count in rows:
        assert f'data-class="{name}" data-count="{count}"' in page
    assert page.count('data-testid="thumbnail"') == 12  # four per class
    assert reverse("registry-dataset-sample", args=[dataset.uuid, 11]) in page


def test_it_serves_thumbnails_decoded_from_the_stored_zip(client, viewer, image_dataset):
    dataset, pixels = image_dataset
    client.force_login(viewer.user)

    for index, preview in enumerate(dataset.previews):
        image = _thumbnail(client, dataset, index)
        digit, number = preview["label"], int(preview["member"].split("/")[1][:3])
        # Small images come back at their own size, pixel for pixel, re-encoded.
        assert image.mode == "L" and image.size == (8, 8)
        assert np.array_equal(np.asarray(image), pixels[int(digit)][number])


def test_it_bounds_the_size_of_a_thumbnail(client, owner, project):
    from image_folders import png, zip_bytes

    big = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    client.force_login(owner.user)
    client.post(
        reverse("registry-dataset-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile("big.zip", zip_bytes({"a/1.png": png(big)}))},
    )
    dataset = Dataset.objects.get(project=project)

    image = _thumbnail(client, dataset, 0)

    assert image.mode == "RGB" and image.size == (64, 96)


def test_it_hides_the_page_and_thumbnails_from_an_outsider(client, outsider, image_dataset):
    dataset, _ = image_dataset
    client.force_login(outsider.user)
    assert client.get(reverse("registry-dataset", args=[dataset.uuid])).status_code == 404
    thumbnail = reverse("registry-dataset-sample", args=[dataset.uuid, 0])
    assert client.get(thumbnail).status_code == 404


def test_it_answers_404_for_a_sample_that_was_not_recorded(client, owner, image_dataset):
    dataset, _ = image_dataset
    client.force_login(owner.user)
    url = reverse("registry-dataset-sample", args=[dataset.uuid, len(dataset.previews)])
    assert client.get(url).status_code == 404


def test_it_requires_a_login(client, image_dataset):
    dataset, _ = image_dataset
    response = client.get(reverse("registry-dataset", args=[dataset.uuid]))
    assert response.status_code == 302 and "login" in response["Location"]


def test_it_shows_arrays_label_histogram_and_samples_of_an_npz(client, member, dataset):
    client.force_login(member.user)

    page = client.get(reverse("registry-dataset", args=[dataset.uuid])).content.decode()

    assert 'data-testid="dataset-arrays"' in page and "[400, 1, 8, 8]" in page
    assert sum(c["count"] for c in dataset.classes) == 400 and len(dataset.classes) == 10
    assert page.count('data-testid="class-row"') == 10
    assert page.count('data-testid="thumbnail"') == 16
    image = _thumbnail(client, dataset, 3)
    assert image.mode == "L" and image.size == (8, 8)
    # Scaled to the sample's own range: the darkest value is 0, the brightest 255.
    with np.load(dataset.file.path) as npz:
        sample = npz["x"][3, 0]
    shown = np.asarray(image).astype(np.float64)
    assert shown.min() == 0 and shown.max() == 255
    expected = (sample - sample.min()) / (sample.max() - sample.min()) * 255
    assert np.abs(shown - expected).max() <= 0.5 + 1e-6
