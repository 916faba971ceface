"""The whole product path in a real browser: log in, upload, compress, watch, download."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from accounts.services import create_user_with_personal_team

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = os.environ.get("MODELPRESS_E2E_SCREENSHOTS")
PASSWORD = "a-long-unusual-passphrase"


def _shot(page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def _sign_up_and_log_in(page, live_server, username: str, start: str = "/accounts/login/"):
    create_user_with_personal_team(
        username=username, email=f"{username}@example.com", password=PASSWORD
    )
    page.goto(f"{live_server.url}{start}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_it_compresses_an_uploaded_model_end_to_end(
    live_server, worker, page, tiny_cnn_onnx, tmp_path
):
    import numpy as np
    import onnxruntime as ort
    from playwright.sync_api import expect

    _sign_up_and_log_in(page, live_server, "grace", start="/")  # home redirects to login
    expect(page.get_by_role("heading", name="Projects")).to_be_visible()

    page.fill("input[name=name]", "Digits")
    page.click("text=Create project")
    expect(page.get_by_role("heading", name="Digits")).to_be_visible()

    # A corrupt file first: the form explains, nothing is created.
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"definitely not a model")
    page.set_input_files("#upload-form input[type=file]", str(bad))
    page.click("text=Upload and check")
    expect(page.locator("#upload-form .field-error")).to_contain_text("ONNX")
    _shot(page, "01-upload-rejected")

    page.set_input_files("#upload-form input[type=file]", str(tiny_cnn_onnx))
    page.click("text=Upload and check")
    expect(page.get_by_role("heading", name="tiny_cnn")).to_be_visible()
    expect(page.locator("text=logits").first).to_be_visible()
    _shot(page, "02-model")

    page.click("text=Start job")
    expect(page.get_by_role("heading", name="Compression job")).to_be_visible()
    # Marker survives only if the status updates by htmx swaps, not full page reloads.
    page.evaluate("window.__noReload = true")
    status = page.get_by_test_id("job-status")
    expect(status).to_have_text("Succeeded", timeout=180_000)
    assert page.evaluate("window.__noReload") is True
    expect(page.get_by_test_id("comparison")).to_contain_text("File size")
    expect(page.get_by_test_id("fidelity")).to_contain_text("logits")
    _shot(page, "03-results")

    with page.expect_download() as download_info:
        page.get_by_test_id("artifacts").locator("a").first.click()
    downloaded = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(downloaded)
    assert downloaded.name.endswith(".onnx")

    session = ort.InferenceSession(str(downloaded), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": np.random.rand(3, 1, 8, 8).astype(np.float32)})
    assert logits.shape == (3, 10)


def test_it_runs_static_int8_with_an_uploaded_dataset(
    live_server, worker, page, tiny_cnn_onnx, pattern_npz
):
    from playwright.sync_api import expect

    _sign_up_and_log_in(page, live_server, "ada")
    page.fill("input[name=name]", "Calibrated")
    page.click("text=Create project")

    page.set_input_files("#dataset-form input[type=file]", str(pattern_npz))
    page.click("text=Upload dataset")
    expect(page.get_by_test_id("datasets")).to_contain_text("[400, 1, 8, 8]")
    page.set_input_files("#upload-form input[type=file]", str(tiny_cnn_onnx))
    page.click("text=Upload and check")
    expect(page.get_by_role("heading", name="tiny_cnn")).to_be_visible()

    # Choosing a preset swaps the recipe editor in place (htmx), keeping it editable.
    page.select_option("select[name=preset]", "static-int8")
    expect(page.locator("#job-recipe")).to_have_value(re.compile("mode: static-int8"))
    page.select_option("select[name=dataset]", label="patterns (400 samples, labelled)")
    page.click("text=Start job")
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=180_000)
    expect(page.get_by_test_id("accuracy")).to_contain_text("Top-1")
    expect(page.locator("#results")).to_contain_text("calibrated with percentile")
    _shot(page, "04-static-results")
