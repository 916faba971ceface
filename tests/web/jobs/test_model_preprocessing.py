"""A model version carries its image preprocessing once (registry.preprocessing): set on the
version page by those who may edit it, and the default normalisation of every job on it."""

from __future__ import annotations

import html
import re

import pytest
import yaml
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _save(client, version, **fields):
    url = reverse("registry-model-version-preprocessing", args=[version.uuid])
    return client.post(url, fields, follow=True)


def _form_recipe(client, version) -> dict:
    page = client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()
    text = page.split('id="job-recipe"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    return yaml.safe_load(html.unescape(text))


def test_it_defaults_to_no_normalisation(client, owner, model_version):
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    now = re.search(r'data-testid="model-preprocessing-now">([^<]+)<', page.content.decode())[1]
    assert now == "none: pixels scaled to [0, 1], no mean or std"
    evaluate = _form_recipe(client, model_version)["evaluate"]
    assert evaluate["image_mean"] == [0.0] and evaluate["image_std"] == [1.0]


@pytest.mark.parametrize("role", ["owner", "member"])
def test_it_saves_the_preprocessing_and_every_new_job_form_starts_from_it(
    client, role, request, model_version
):
    persona = request.getfixturevalue(role)
    client.force_login(persona.user)

    response = _save(client, model_version, mean="0.1307", std="0.3081", scale="1")

    assert "Preprocessing saved" in response.content.decode()
    model_version.refresh_from_db()
    assert model_version.preprocessing == {"mean": [0.1307], "std": [0.3081], "scale": "1"}
    evaluate = _form_recipe(client, model_version)["evaluate"]
    assert evaluate["image_mean"] == [0.1307] and evaluate["image_std"] == [0.3081]
    page = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    assert "The model version's preprocessing" in html.unescape(page.content.decode())


def test_it_turns_a_0_255_scale_into_the_engine_s_0_1_terms(client, owner, model_version):
    client.force_login(owner.user)
    _save(client, model_version, mean="127.5", std="127.5", scale="255")
    evaluate = _form_recipe(client, model_version)["evaluate"]
    assert evaluate["image_mean"] == [0.5] and evaluate["image_std"] == [0.5]


def test_it_refuses_values_that_do_not_fit_the_model(client, owner, model_version):
    client.force_login(owner.user)
    # The tiny CNN takes one channel: three means do not fit it.
    response = _save(client, model_version, mean="0.4, 0.5, 0.6", std="0.2", scale="1")
    body = html.unescape(response.content.decode())
    assert "The preprocessing was not saved: Mean has 3 values" in body
    assert "1 channel" in body
    response = _save(client, model_version, mean="0.5", std="0", scale="1")
    assert "Std values must be above 0" in html.unescape(response.content.decode())
    model_version.refresh_from_db()
    assert model_version.preprocessing == {}


def test_a_viewer_cannot_change_it_and_an_outsider_cannot_see_it(
    client, viewer, outsider, model_version
):
    client.force_login(viewer.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    assert 'data-testid="save-preprocessing"' not in page.content.decode()
    url = reverse("registry-model-version-preprocessing", args=[model_version.uuid])
    assert client.post(url, {"mean": "0.5", "std": "0.5", "scale": "1"}).status_code == 403
    client.force_login(outsider.user)
    assert client.post(url, {"mean": "0.5", "std": "0.5", "scale": "1"}).status_code == 404
    model_version.refresh_from_db()
    assert model_version.preprocessing == {}
