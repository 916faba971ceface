"""The upload form's names endpoint: the chosen file's text members (read in the browser by
registry/static/registry/upload_names.js) in, forward's names out, before any upload."""

from __future__ import annotations

import json
import zipfile

import pytest
from django.urls import reverse

from model_builders import save_x_torchscript
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def x_members(tmp_path_factory) -> dict[str, str]:
    path = save_x_torchscript(tmp_path_factory.mktemp("prefill") / "xnet.pt")
    with zipfile.ZipFile(path) as zf:
        return {
            i.filename: zf.read(i).decode()
            for i in zf.infolist()
            if "/code/" in i.filename and i.filename.endswith(".py")
        }


def _post(client, project, body: str | bytes):
    url = reverse("registry-upload-names", args=[project.uuid])
    return client.post(url, body, content_type="application/json")


def test_it_tells_the_owner_forwards_names_without_an_upload(client, owner, project, x_members):
    client.force_login(owner.user)
    response = _post(client, project, json.dumps({"members": x_members}))
    assert response.status_code == 200
    assert response.json() == {
        "names": ["x"],
        "required": ["x"],
        "placeholder": "x: 1x3x224x224",
        "fill": "x: ",
        "hint": "This model's forward takes x.",
    }
    assert not ModelVersion.objects.exists()


def test_unknown_names_change_nothing(client, owner, project):
    client.force_login(owner.user)
    response = _post(client, project, json.dumps({"members": {"m/data.pkl": "x"}}))
    assert response.status_code == 200 and response.json() == {"names": None}


def test_it_hides_the_project_from_an_outsider(client, outsider, project, x_members):
    client.force_login(outsider.user)
    assert _post(client, project, json.dumps({"members": x_members})).status_code == 404


def test_it_refuses_a_viewer(client, viewer, project, x_members):
    client.force_login(viewer.user)
    assert _post(client, project, json.dumps({"members": x_members})).status_code == 403


def test_it_needs_a_login(client, project, x_members):
    response = _post(client, project, json.dumps({"members": x_members}))
    assert response.status_code == 302 and "/login" in response["Location"]


def test_it_needs_the_csrf_token(owner, project, x_members):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(owner.user)
    assert _post(client, project, json.dumps({"members": x_members})).status_code == 403


def test_it_refuses_an_oversized_body_unread(client, owner, project):
    client.force_login(owner.user)
    big = json.dumps({"members": {"m/code/__torch__.py": "#" * (4 * 1024**2)}})
    response = _post(client, project, big)
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    ["{not json", "[]", '{"members": []}', '{"members": {"a/code/b.py": 3}}', '{"other": {}}'],
)
def test_it_refuses_a_body_that_is_not_members(client, owner, project, body):
    client.force_login(owner.user)
    response = _post(client, project, body)
    assert response.status_code == 400
