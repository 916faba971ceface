"""The job form in a real browser: a preset, an image-folder dataset and a normalisation set in
every order give the same recipe, and the preset stays chosen.

Before: choosing the dataset after a preset flipped the preset to "Custom recipe", and
choosing the preset after the image .zip reset the normalisation.
"""

from __future__ import annotations

import itertools
import re

import pytest

from e2e.test_compress_flow import _sign_up_and_log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DATASET = "digit-folders (18 images, labelled)"
PRESET = "accuracy-aware-int8"


def _choose_preset(page) -> None:
    from playwright.sync_api import expect

    page.select_option("#job-preset", PRESET)
    expect(page.locator("#job-recipe")).to_have_value(re.compile(r"accuracy_aware: true"))


def _choose_dataset(page) -> None:
    from playwright.sync_api import expect

    page.select_option("#job-dataset", label=DATASET)
    expect(page.get_by_test_id("data-split")).to_be_visible()


def _set_normalisation(page) -> None:
    from playwright.sync_api import expect

    recipe = page.locator("#job-recipe")
    # One field at a time: each change swaps the form, which must not eat the next value.
    page.fill("#norm-image-mean", "0.5")
    page.press("#norm-image-mean", "Tab")
    expect(recipe).to_have_value(re.compile(r"image_mean: \[0\.5\]"))
    page.fill("#norm-image-std", "0.25")
    page.press("#norm-image-std", "Tab")
    expect(recipe).to_have_value(re.compile(r"image_std: \[0\.25\]"))


STEPS = {"preset": _choose_preset, "dataset": _choose_dataset, "normalisation": _set_normalisation}


def test_preset_dataset_and_normalisation_give_one_recipe_in_every_order(
    live_server, page, tiny_cnn_onnx, tmp_path
):
    from playwright.sync_api import expect

    from image_folders import digits_zip

    content, _ = digits_zip((0, 1, 2), per_class=6, folder=lambda d: f"digit-{d}")
    data = tmp_path / "digit-folders.zip"
    data.write_bytes(content)
    _sign_up_and_log_in(page, live_server, "order")
    page.fill("input[name=name]", "Order")
    page.click("text=Create project")
    page.set_input_files("#dataset-form input[type=file]", str(data))
    page.click("text=Upload dataset")
    expect(page.get_by_test_id("datasets")).to_contain_text("3 class folders")
    page.set_input_files("#upload-form input[type=file]", str(tiny_cnn_onnx))
    page.click("text=Upload and check")
    expect(page.get_by_role("heading", name="tiny_cnn")).to_be_visible()
    model_url = page.url
    # The form states its normalisation: none until the model or the user says otherwise.
    expect(page.get_by_test_id("normalisation-now")).to_contain_text("None")

    recipes = {}
    for order in itertools.permutations(STEPS):
        page.goto(model_url)
        # Every order starts from no dataset (the form picks the newest for static int8).
        page.select_option("#job-dataset", "")
        expect(page.get_by_test_id("data-split")).to_have_count(0)
        for step in order:
            STEPS[step](page)
        expect(page.locator("#job-preset")).to_have_value(PRESET)
        expect(page.get_by_test_id("normalisation-now")).to_contain_text("Mean [0.5], std [0.25]")
        recipes[order] = page.locator("#job-recipe").input_value()

    first = next(iter(recipes.values()))
    assert "image_mean: [0.5]" in first and "accuracy_aware: true" in first
    for order, recipe in recipes.items():
        assert recipe == first, order
    expect(page.get_by_test_id("start-job")).to_be_enabled()
