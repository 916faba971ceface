"""The TorchScript input-name trap: input shapes are checked against the model's forward at
upload, before any conversion is queued; a refusal names the real inputs and the form comes
back holding them. A failed conversion never looks like a usable version."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from conftest import storage_files
from model_builders import save_x_torchscript
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def x_model(tmp_path_factory) -> Path:
    """A traced TorchScript module whose forward takes `x` (as most hand-written models do)."""
    return save_x_torchscript(tmp_path_factory.mktemp("names") / "net.pt")


def _post(client, project, path: Path, shapes: str, **headers):
    return client.post(
        reverse("registry-upload", args=[project.uuid]),
        {"file": SimpleUploadedFile(path.name, path.read_bytes()), "input_shapes": shapes},
        **headers,
    )


def test_it_refuses_a_wrong_input_name_at_upload_and_offers_the_right_one(
    client, owner, project, x_model, django_capture_on_commit_callbacks
):
    client.force_login(owner.user)
    before = storage_files()
    with django_capture_on_commit_callbacks() as enqueued:
        response = _post(client, project, x_model, "input: 1x3x224x224")

    assert response.status_code == 422
    page = response.content.decode()
    assert (
        "This model&#x27;s forward takes `x`; you gave `input`. Use e.g. `x: 1x3x224x224`." in page
    )
    # The field comes back holding the shapes under forward's names.
    assert ">\nx: 1x3x224x224</textarea>" in page
    # Nothing was stored or queued: no conversion waits for a worker to fail.
    assert not enqueued and not ModelVersion.objects.exists() and storage_files() == before


def test_it_keeps_the_chosen_file_across_the_htmx_swap(client, owner, project, x_model):
    client.force_login(owner.user)

    response = _post(client, project, x_model, "input: 1x3x8x8", HTTP_HX_REQUEST="true")

    assert response.status_code == 200  # htmx swaps the re-rendered form in
    page = response.content.decode()
    assert ">\nx: 1x3x8x8</textarea>" in page and "forward takes `x`" in page
    assert 'type="file"' in page and 'hx-preserve="true"' in page


def test_it_shows_forwards_names_when_no_shapes_were_given(client, owner, project, x_model):
    client.force_login(owner.user)

    response = _post(client, project, x_model, "")

    assert response.status_code == 422
    page = response.content.decode()
    assert "forward takes `x`, and the file does not record the shapes of its inputs" in page
    assert 'placeholder="x: 1x3x224x224"' in page


def test_it_names_shapes_given_by_position_from_forward(client, owner, project, x_model):
    client.force_login(owner.user)

    response = _post(client, project, x_model, "1x3x8x8")

    assert response.status_code == 302
    version = ModelVersion.objects.get()
    assert version.status == "converting"
    assert version.input_spec == [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}]


def test_it_accepts_the_right_name_and_converts(client, owner, project, x_model):
    from jobrunner.ingest import convert_model_version

    client.force_login(owner.user)
    assert _post(client, project, x_model, "x: 1x3x8x8").status_code == 302
    version = ModelVersion.objects.get()

    convert_model_version(str(version.uuid))

    version.refresh_from_db()
    assert version.status == "ready", version.status_message
    assert [t["name"] for t in version.inputs] == ["x"]


def test_the_api_refuses_a_wrong_name_with_the_same_message(client, owner, project, x_model):
    from accounts.tokens import create_token

    secret = create_token(user=owner.user, name="t").raw
    response = client.post(
        f"/api/v1/projects/{project.uuid}/models",
        {"file": SimpleUploadedFile("net.pt", x_model.read_bytes()), "input_shapes": "input: 1x3"},
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )

    assert response.status_code == 400
    assert "forward takes `x`; you gave `input`" in response.json()["detail"]


def test_it_checks_names_given_for_a_torch_export_program(
    client, owner, project, torch_model_files
):
    client.force_login(owner.user)

    response = _post(client, project, torch_model_files["export"], "x: 1x3x16x16")

    assert response.status_code == 422
    assert "forward takes `input`; you gave `x`" in response.content.decode()
    assert not ModelVersion.objects.exists()


# --- a failed conversion is never offered as usable ------------------------------------------


@pytest.fixture
def failed_version(project, owner, x_model):
    from conftest import _ingest
    from jobrunner.ingest import convert_model_version
    from registry.services import ingest_model_upload

    def ingest(**kwargs):
        # Five channels for a Conv2d that takes three: the conversion fails in the worker.
        return ingest_model_upload(**kwargs, input_shapes="x: 1x5x8x8")

    version = _ingest(ingest, project, owner, x_model)
    convert_model_version(str(version.uuid))
    version.refresh_from_db()
    assert version.status == "failed"
    return version


def test_a_failed_version_is_shown_failed_everywhere_and_offered_for_nothing(
    client, owner, project, failed_version, model_version
):
    from accounts.tokens import create_token

    client.force_login(owner.user)
    listing = client.get(reverse("registry-project", args=[project.uuid])).content.decode()
    row = listing[listing.index(f"{failed_version.uuid}") :].split("</tr>")[0]
    assert 'class="status status-failed"' in row and "Failed" in row

    page = client.get(reverse("registry-model-version", args=[failed_version.uuid]))
    html = page.content.decode()
    assert 'data-status="failed"' in html and "conversion-error" in html
    assert 'id="job-form"' not in html and "Start job" not in html

    # The ready version's job form does not list it as a distillation teacher.
    ready_page = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    assert str(failed_version.uuid) not in ready_page.content.decode()

    secret = create_token(user=owner.user, name="t").raw
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    api = client.get(f"/api/v1/models/{failed_version.uuid}", **auth).json()
    assert api["status"] == "failed" and api["status_message"] and api["queue_position"] is None
    started = client.post(
        f"/api/v1/models/{failed_version.uuid}/jobs",
        {"preset": "fast-int8"},
        content_type="application/json",
        **auth,
    )
    assert started.status_code in (400, 409), started.content
    assert "could not be converted" in started.json()["detail"]
