"""An image-folder dataset in a real browser: upload the zip, look at its preview (classes,
thumbnails served by the app), then choose it on a model's job form, where the data split
goes into the recipe YAML and the dataset's own mean/std are shown but not applied (no
normalisation unless the model version or the user sets it)."""

from __future__ import annotations

import re

import pytest

from e2e.test_compress_flow import _shot, _sign_up_and_log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_it_previews_an_image_zip_and_fills_the_job_form_from_it(
    live_server, page, tiny_cnn_onnx, tmp_path
):
    from playwright.sync_api import expect

    from image_folders import digits_zip

    content, _ = digits_zip((0, 1, 2), per_class=6, folder=lambda d: f"digit-{d}")
    data = tmp_path / "digit-folders.zip"
    data.write_bytes(content)

    _sign_up_and_log_in(page, live_server, "ada")
    page.fill("input[name=name]", "Pictures")
    page.click("text=Create project")
    page.set_input_files("#dataset-form input[type=file]", str(data))
    page.click("text=Upload dataset")
    datasets = page.get_by_test_id("datasets")
    expect(datasets).to_contain_text("images 8×8 L")
    expect(datasets).to_contain_text("3 class folders")

    page.get_by_role("link", name="digit-folders").click()
    expect(page.get_by_role("heading", name="digit-folders")).to_be_visible()
    expect(page.get_by_test_id("class-row")).to_have_count(3)
    thumbnails = page.get_by_test_id("thumbnail")
    expect(thumbnails).to_have_count(12)
    # Every thumbnail loaded as an image (decoded from the stored zip by the app).
    thumbnails.last.scroll_into_view_if_needed()
    page.wait_for_function(
        "[...document.querySelectorAll('[data-testid=thumbnail]')]"
        ".every(img => img.complete && img.naturalWidth === 8)"
    )
    _shot(page, "20-image-dataset-preview")

    page.get_by_role("link", name="Pictures").click()
    page.set_input_files("#upload-form input[type=file]", str(tiny_cnn_onnx))
    page.click("text=Upload and check")
    expect(page.get_by_role("heading", name="tiny_cnn")).to_be_visible()
    page.select_option("#job-preset", "static-int8")
    step = page.get_by_test_id("builder-step")
    expect(step).to_have_attribute("data-technique", "quantize:static-int8")
    # The form may already show this dataset (it preselects one for a preset that needs
    # data), so wait for the swap this choice brings before typing into the fields it redraws.
    with page.expect_response(lambda r: "/builder" in r.url):
        page.select_option("#job-dataset", label="digit-folders (18 images, labelled)")
    recipe = page.locator("#job-recipe")
    expect(page.get_by_test_id("image-preprocessing")).to_contain_text("fed as NCHW")
    expect(recipe).to_have_value(re.compile(r"image_mean: \[0\.0\]"))

    # Let every swap the dataset choice started land before typing into a field they redraw,
    # then wait for the swap this edit brings.
    page.wait_for_load_state("networkidle")
    with page.expect_response(lambda r: "/builder" in r.url):
        page.fill("#split-calibration-fraction", "0.25")
        page.press("#split-calibration-fraction", "Tab")
    expect(recipe).to_have_value(re.compile(r"calibration_fraction: 0\.25"))
    expect(page.get_by_test_id("split-counts")).to_contain_text("Of 18 samples: 4 calibrate")
    expect(page.get_by_test_id("start-job")).to_be_enabled()
    _shot(page, "21-job-form-data-split")
