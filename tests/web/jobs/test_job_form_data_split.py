"""The job form's data split (evaluate.calibration_fraction and seed) and the image-folder
preprocessing it writes into the recipe, which stays the one source the job is made from."""

from __future__ import annotations

import html
import re

import pytest
import yaml
from django.urls import reverse

from jobs.models import Job

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def _builder(client, version, data: dict) -> str:
    response = client.post(reverse("jobs-builder", args=[version.uuid]), data, **HX)
    assert response.status_code == 200
    return response.content.decode()


def _yaml(page: str) -> str:
    text = page.split('id="job-recipe"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    return html.unescape(text)


def _evaluate(page: str) -> dict:
    return yaml.safe_load(_yaml(page))["evaluate"]


def _counts(page: str) -> str:
    return html.unescape(re.search(r'data-testid="split-counts">([^<]+)<', page).group(1))


def _start_disabled(page: str) -> bool:
    button = re.search(r'<button type="submit" data-testid="start-job"[^>]*>', page).group(0)
    return "disabled" in button


def _static_int8(client, version) -> str:
    return _yaml(_builder(client, version, {"action": "preset", "preset": "static-int8"}))


def test_it_shows_the_split_of_the_chosen_dataset(client, owner, model_version, dataset):
    client.force_login(owner.user)
    recipe = _static_int8(client, model_version)
    without = _builder(client, model_version, {"action": "yaml", "recipe": recipe})
    assert 'data-testid="data-split"' not in without

    page = _builder(
        client, model_version, {"action": "dataset", "recipe": recipe, "dataset": dataset.uuid}
    )

    assert 'data-testid="data-split"' in page
    assert 'name="split-calibration_fraction" value="0.5"' in page
    assert 'name="split-seed" value="0"' in page
    assert _counts(page).startswith("Of 400 samples: 200 calibrate and train, 200 are scored")
    assert _yaml(page) == recipe  # an .npz brings no preprocessing


def test_it_writes_the_split_into_the_recipe(client, owner, model_version, dataset):
    client.force_login(owner.user)
    recipe = _static_int8(client, model_version)

    page = _builder(
        client,
        model_version,
        {
            "action": "split",
            "recipe": recipe,
            "dataset": dataset.uuid,
            "split-calibration_fraction": "0.25",
            "split-seed": "42",
        },
    )

    evaluate = _evaluate(page)
    assert evaluate["calibration_fraction"] == 0.25 and evaluate["seed"] == 42
    before, after = yaml.safe_load(recipe), yaml.safe_load(_yaml(page))
    assert after["steps"] == before["steps"]
    assert {
        k: v for k, v in after["evaluate"].items() if k not in ("calibration_fraction", "seed")
    } == {k: v for k, v in before["evaluate"].items() if k not in ("calibration_fraction", "seed")}
    assert _counts(page).startswith("Of 400 samples: 100 calibrate and train, 300 are scored")
    assert 'name="split-seed" value="42"' in page and not _start_disabled(page)

    # The job is made from the YAML, split included.
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]),
        {"recipe": _yaml(page), "dataset": str(dataset.uuid)},
    )
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.recipe["evaluate"]["calibration_fraction"] == 0.25
    assert job.recipe["evaluate"]["seed"] == 42


def test_a_training_fraction_makes_a_third_split_and_an_empty_one_removes_it(
    client, owner, model_version, dataset
):
    client.force_login(owner.user)
    fields = {
        "action": "split",
        "recipe": _static_int8(client, model_version),
        "dataset": dataset.uuid,
        "split-calibration_fraction": "0.25",
        "split-training_fraction": "0.5",
        "split-seed": "7",
    }

    page = _builder(client, model_version, fields)

    evaluate = _evaluate(page)
    assert (evaluate["calibration_fraction"], evaluate["training_fraction"]) == (0.25, 0.5)
    assert _counts(page).startswith("Of 400 samples: 100 calibrate, 200 train, 100 are scored")
    assert 'name="split-training_fraction" value="0.5"' in page and not _start_disabled(page)
    response = client.post(
        reverse("jobs-create", args=[model_version.uuid]),
        {"recipe": _yaml(page), "dataset": str(dataset.uuid)},
    )
    assert response.status_code == 302
    assert Job.objects.get().recipe["evaluate"]["training_fraction"] == 0.5

    cleared = _builder(
        client, model_version, {**fields, "recipe": _yaml(page), "split-training_fraction": ""}
    )
    assert _evaluate(cleared).get("training_fraction") is None
    assert _counts(cleared).startswith("Of 400 samples: 100 calibrate and train, 300 are scored")


def test_it_refuses_fractions_that_leave_too_little_to_evaluate(
    client, owner, model_version, dataset
):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "split",
            "recipe": _static_int8(client, model_version),
            "dataset": dataset.uuid,
            "split-calibration_fraction": "0.5",
            "split-training_fraction": "0.5",
            "split-seed": "0",
        },
    )
    error = html.unescape(re.search(r'data-testid="recipe-error">([^<]+)<', page).group(1))
    assert "more than 0.95" in error and "leave at least 5%" in error
    assert _start_disabled(page)
    # The fields keep what was typed, so it can be corrected in place.
    assert 'name="split-training_fraction" value="0.5"' in page


def test_it_refuses_a_fraction_the_engine_does_not_accept(client, owner, model_version, dataset):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "split",
            "recipe": _static_int8(client, model_version),
            "dataset": dataset.uuid,
            "split-calibration_fraction": "0.99",
            "split-seed": "0",
        },
    )
    assert "calibration_fraction: 0.99" in _yaml(page)
    error = html.unescape(re.search(r'data-testid="recipe-error">([^<]+)<', page).group(1))
    assert "calibration_fraction" in error and "0.95" in error
    assert _start_disabled(page)


def test_it_never_takes_the_mean_and_std_from_the_image_dataset_itself(
    client, owner, model_version, image_folder_dataset
):
    """The dataset's own statistics made the reported accuracy an artefact: choosing an image
    dataset leaves the recipe's normalisation alone (none, unless the model says otherwise)."""
    client.force_login(owner.user)
    recipe = _static_int8(client, model_version)

    page = _builder(
        client,
        model_version,
        {"action": "dataset", "recipe": recipe, "dataset": image_folder_dataset.uuid},
    )

    stats = image_folder_dataset.image_stats["L"]
    evaluate = _evaluate(page)
    assert evaluate["image_mean"] == [0.0] and evaluate["image_std"] == [1.0]
    assert evaluate["image_mean"] != stats["mean"]
    now = html.unescape(re.search(r'data-testid="normalisation-now">(.+?)</p>', page, re.S)[1])
    assert "None" in now and "scaled to [0, 1]" in now
    note = html.unescape(re.search(r'data-testid="image-preprocessing">([^<]+)<', page).group(1))
    assert "converted to grayscale, resized to 8x8" in note and "fed as NCHW" in note
    assert "mean [0.0] and std [1.0]" in note
    assert "(300 images, labelled)" in page
    assert not _start_disabled(page)


def test_it_writes_the_normalisation_typed_on_the_form(
    client, owner, model_version, image_folder_dataset
):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "normalisation",
            "recipe": _static_int8(client, model_version),
            "dataset": image_folder_dataset.uuid,
            "norm-image_mean": "0.5",
            "norm-image_std": "0.25",
        },
    )
    assert _evaluate(page)["image_mean"] == [0.5] and _evaluate(page)["image_std"] == [0.25]
    assert 'name="norm-image_mean" value="0.5"' in page
    assert "Differs from the model version" in html.unescape(page)


def test_it_keeps_the_mean_and_std_a_recipe_sets(
    client, owner, model_version, image_folder_dataset
):
    client.force_login(owner.user)
    data = yaml.safe_load(_static_int8(client, model_version))
    data["evaluate"].update(image_mean=[0.5], image_std=[0.25])
    recipe = yaml.safe_dump(data, sort_keys=False)

    page = _builder(
        client,
        model_version,
        {"action": "dataset", "recipe": recipe, "dataset": image_folder_dataset.uuid},
    )

    assert _evaluate(page)["image_mean"] == [0.5] and _evaluate(page)["image_std"] == [0.25]


def test_it_says_a_model_without_an_image_input_cannot_take_image_folders(
    client, owner, project, tiny_mlp_onnx, image_folder_dataset
):
    from conftest import _ingest
    from registry.services import ingest_model_upload

    mlp = _ingest(ingest_model_upload, project, owner, tiny_mlp_onnx)
    client.force_login(owner.user)
    recipe = _static_int8(client, mlp)

    page = _builder(
        client, mlp, {"action": "dataset", "recipe": recipe, "dataset": image_folder_dataset.uuid}
    )

    error = html.unescape(re.search(r'data-testid="dataset-error">([^<]+)<', page).group(1))
    assert "image-folder dataset needs a 4-D image input" in error
    assert _start_disabled(page) and _yaml(page) == recipe
