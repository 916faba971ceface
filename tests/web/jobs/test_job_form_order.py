"""The job form gives the same recipe for the same choices, whatever order they are made in.

Before: choosing a dataset after a preset flipped the preset to "Custom recipe", and choosing
the preset after an image .zip reset the normalisation to the dataset's statistics (or to mean
0 / std 1). Each builder request here posts what the browser would: every field as the last
response left it, with the one changed.
"""

from __future__ import annotations

import html
import itertools
import re

import pytest
import yaml
from django.urls import reverse

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def _fields(page: str) -> dict[str, str]:
    """The form's values as the browser would post them."""
    recipe = page.split('id="job-recipe"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    data = {"recipe": html.unescape(recipe)}
    for name in ("preset", "dataset"):
        select = page.split(f'name="{name}"', 1)[1].split("</select>", 1)[0]
        chosen = re.search(r'<option value="([^"]*)" selected', select)
        data[name] = chosen[1] if chosen else ""
    for name in ("norm-image_mean", "norm-image_std"):
        found = re.search(rf'name="{name}" value="([^"]*)"', page)
        if found:
            data[name] = html.unescape(found[1])
    return data


def _act(client, version, page: str, action: str, **changed: str) -> str:
    data = {**_fields(page), **changed, "action": action}
    response = client.post(reverse("jobs-builder", args=[version.uuid]), data, **HX)
    assert response.status_code == 200
    return response.content.decode()


CHOICES = {
    "preset": ("preset", {"preset": "static-int8"}),
    "dataset": ("dataset", None),  # the image-folder dataset, filled in per test
    "normalisation": ("normalisation", {"norm-image_mean": "0.5", "norm-image_std": "0.25"}),
}


def test_the_same_choices_give_the_same_recipe_in_every_order(
    client, owner, model_version, image_folder_dataset
):
    client.force_login(owner.user)
    start = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    start = start.content.decode()
    results = {}
    for order in itertools.permutations(CHOICES):
        page = start
        for choice in order:
            action, changed = CHOICES[choice]
            changed = changed or {"dataset": str(image_folder_dataset.uuid)}
            page = _act(client, model_version, page, action, **changed)
        fields = _fields(page)
        assert fields["preset"] == "static-int8", order  # never flipped to "Custom recipe"
        assert fields["dataset"] == str(image_folder_dataset.uuid)
        results[order] = yaml.safe_load(fields["recipe"])
    first = next(iter(results.values()))
    assert first["evaluate"]["image_mean"] == [0.5] and first["evaluate"]["image_std"] == [0.25]
    assert first["steps"][0]["quantize"]["mode"] == "static-int8"
    for order, recipe in results.items():
        assert recipe == first, order


def test_a_preset_keeps_the_split_typed_before_it(client, owner, model_version, dataset):
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid]))
    page = _act(
        client,
        model_version,
        page.content.decode(),
        "split",
        **{"split-calibration_fraction": "0.3", "split-seed": "4"},
    )
    page = _act(client, model_version, page, "preset", preset="prune-distill-int8")
    evaluate = yaml.safe_load(_fields(page)["recipe"])["evaluate"]
    assert (evaluate["calibration_fraction"], evaluate["seed"]) == (0.3, 4)
    assert _fields(page)["preset"] == "prune-distill-int8"
