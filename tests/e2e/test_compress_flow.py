"""The whole product path in a real browser: log in, upload, compress, watch, download."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
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

    # The deployment bundle: unpacked, its example runs the bundled model as shipped.
    unpacked = _download_bundle(page, tmp_path)
    assert (unpacked / "models" / downloaded.name).read_bytes() == downloaded.read_bytes()
    assert "| File size |" in (unpacked / "REPORT.md").read_text()
    run = subprocess.run(
        [sys.executable, "examples/run_onnx.py"], cwd=unpacked, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "logits: shape [1, 10]" in run.stdout


def _download_bundle(page, tmp_path: Path) -> Path:
    """Click the results page's bundle link and unzip the download; returns the folder."""
    with page.expect_download() as bundle_info:
        page.get_by_test_id("bundle-link").click()
    bundle = tmp_path / bundle_info.value.suggested_filename
    bundle_info.value.save_as(bundle)
    unpacked = tmp_path / "bundle"
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(unpacked)
    return unpacked


def _run_with_patterns(page, recipe: str | None = None) -> None:
    """Start a job on the patterns dataset (with `recipe` typed into the editor, if given)
    and wait for it to succeed."""
    from playwright.sync_api import expect

    if recipe is not None:
        page.fill("#job-recipe", recipe)
    page.select_option("select[name=dataset]", label="patterns (400 samples, labelled)")
    page.click("text=Start job")
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=180_000)


def _project_with_dataset_and_model(page, live_server, user, project, data, model) -> None:
    """Sign up, create a project, upload a dataset and a model; ends on the model's page."""
    from playwright.sync_api import expect

    _sign_up_and_log_in(page, live_server, user)
    page.fill("input[name=name]", project)
    page.click("text=Create project")
    page.set_input_files("#dataset-form input[type=file]", str(data))
    page.click("text=Upload dataset")
    expect(page.get_by_test_id("datasets")).to_contain_text("[400, 1, 8, 8]")
    page.set_input_files("#upload-form input[type=file]", str(model))
    page.click("text=Upload and check")
    expect(page.get_by_role("heading", name="tiny_cnn")).to_be_visible()


def test_it_runs_static_int8_with_an_uploaded_dataset(
    live_server, worker, page, tiny_cnn_onnx, pattern_npz
):
    from playwright.sync_api import expect

    _project_with_dataset_and_model(
        page, live_server, "ada", "Calibrated", pattern_npz, tiny_cnn_onnx
    )

    # Choosing a preset swaps the recipe editor in place (htmx), keeping it editable.
    page.select_option("select[name=preset]", "static-int8")
    expect(page.locator("#job-recipe")).to_have_value(re.compile("mode: static-int8"))
    _run_with_patterns(page)
    expect(page.get_by_test_id("accuracy")).to_contain_text("Top-1")
    expect(page.locator("#results")).to_contain_text("calibrated with percentile")
    _shot(page, "04-static-results")


# Changes the dataset the moment a swap puts a new form on the page: from a DOM mutation
# callback, before any timer can run. Resolves with the recipe once the builder answers.
CHANGE_RIGHT_AFTER_SWAP = """(label) => new Promise((resolve) => {
  const builder = document.getElementById("job-builder");
  const old = document.getElementById("job-dataset");
  new MutationObserver((_, observer) => {
    const select = document.getElementById("job-dataset");
    if (!select || select === old) return;
    observer.disconnect();
    const option = [...select.options].find((o) => o.text === label);
    select.value = option.value;
    select.dispatchEvent(new Event("change", {bubbles: true}));
    document.body.addEventListener("htmx:afterSettle", () => resolve(
      document.getElementById("job-dataset").value === option.value), {once: true});
  }).observe(builder, {childList: true, subtree: true});
  const preset = document.getElementById("job-preset");
  preset.value = "static-int8";
  preset.dispatchEvent(new Event("change", {bubbles: true}));
})"""


def test_a_choice_made_right_after_a_swap_is_not_lost(
    live_server, worker, page, tiny_cnn_onnx, pattern_npz
):
    from playwright.sync_api import expect

    _project_with_dataset_and_model(page, live_server, "grace", "Quick", pattern_npz, tiny_cnn_onnx)

    # htmx gives swapped-in controls their handlers when the swap settles; with a settle
    # delay, a change in between reaches no handler and the form stays as it was.
    assert page.evaluate(CHANGE_RIGHT_AFTER_SWAP, "patterns (400 samples, labelled)") is True
    expect(page.locator("#job-recipe")).to_have_value(re.compile("mode: static-int8"))
    expect(page.get_by_test_id("data-split")).to_be_visible()
    expect(page.get_by_test_id("start-job")).to_be_enabled()


def test_it_exports_tflite_files_and_runs_both_bundled_examples(
    live_server, worker, page, tiny_cnn_onnx, pattern_npz, tmp_path
):
    import numpy as np
    from playwright.sync_api import expect

    _project_with_dataset_and_model(
        page, live_server, "barbara", "Mobile", pattern_npz, tiny_cnn_onnx
    )
    # The dataset gives the full-integer TFLite file its representative samples.
    _run_with_patterns(
        page,
        "version: 1\n"
        "steps:\n"
        "  - quantize: {mode: dynamic-int8}\n"
        "export: [onnx, tflite]\n"
        "tflite: {precisions: [fp32, int8], representative_samples: 50}\n"
        "evaluate: {latency_runs: 3, warmup: 1, batch_sizes: []}\n",
    )

    rows = page.get_by_test_id("artifact-row")
    expect(rows).to_have_count(3)
    expect(page.locator("[data-testid=artifact-row][data-status=ok]")).to_have_count(3)
    for name in ("model.int8.onnx", "model.fp32.tflite", "model.int8.tflite"):
        expect(rows.filter(has_text=name).get_by_role("link", name=name)).to_be_visible()
    tflite = rows.filter(has_text="model.int8.tflite")
    expect(tflite).to_contain_text("input: NHWC")
    expect(tflite).to_contain_text("LiteRT")
    _shot(page, "07-tflite-results")

    unpacked = _download_bundle(page, tmp_path)
    models = unpacked / "models"
    assert {p.name for p in models.iterdir()} == {
        "model.int8.onnx", "model.fp32.tflite", "model.int8.tflite",
    }  # fmt: skip

    # Four samples in the ONNX model's layout (NCHW); the TFLite example transposes them.
    with np.load(pattern_npz) as data:
        np.savez(tmp_path / "four.npz", x=data["x"][:4])
    runs = {
        "onnx": ["examples/run_onnx.py"],
        "tflite fp32": ["examples/run_tflite.py", "--model", "models/model.fp32.tflite"],
        "tflite int8": ["examples/run_tflite.py", "--model", "models/model.int8.tflite"],
    }
    for label, args in runs.items():
        run = subprocess.run(
            [sys.executable, *args, "--npz", str(tmp_path / "four.npz")],
            cwd=unpacked,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, (label, run.stderr)
        assert "logits: shape [4, 10]" in run.stdout, (label, run.stdout)
        top1 = re.search(r"top-1 per sample: \[([\d, ]+)\]", run.stdout)
        assert top1 and len(top1.group(1).split(",")) == 4, (label, run.stdout)


def test_it_prunes_and_distills_with_a_preset_and_draws_the_training_curve(
    live_server, worker, page, tiny_cnn_onnx, pattern_npz
):
    from playwright.sync_api import expect

    _project_with_dataset_and_model(
        page, live_server, "edsger", "Pruned", pattern_npz, tiny_cnn_onnx
    )

    expect(page.locator("select[name=preset] option[value=prune-distill]")).to_contain_text(
        "needs a dataset"
    )
    expect(page.get_by_test_id("dataset-help")).to_contain_text("prune + distill")
    page.select_option("select[name=preset]", "prune-distill")
    expect(page.locator("#job-recipe")).to_have_value(re.compile(r"prune:[\s\S]*distill:"))
    # Fewer epochs than the preset's 30 keep the test quick; the editor stays editable.
    _run_with_patterns(
        page,
        "version: 1\n"
        "steps:\n"
        "  - prune: {method: channel, amount: 0.5}\n"
        "  - distill: {epochs: 2, batch_size: 32}\n"
        "evaluate: {latency_runs: 3, warmup: 1, batch_sizes: []}\n",
    )

    layers = page.get_by_test_id("pruned-layers")
    expect(layers).to_contain_text("/0/Conv")
    expect(layers).to_contain_text("50.0%")
    expect(page.get_by_test_id("pruning-totals")).to_contain_text("MACs")
    training = page.get_by_test_id("training")
    expect(training).to_contain_text("distill from the original model")
    canvas = training.locator("canvas[data-training-chart]")
    expect(canvas).to_have_attribute("data-drawn", "1")
    assert page.evaluate("(c) => !!window.Chart.getChart(c)", canvas.element_handle())
    _shot(page, "05-prune-distill-results")


def test_it_redraws_the_live_training_curve_after_every_status_swap(
    live_server, page, owner, trained_model_version
):
    from playwright.sync_api import expect

    from conftest import PASSWORD as OWNER_PASSWORD
    from jobs.models import Job

    def point(epoch: int) -> dict:
        return {
            "step": 1, "kind": "distill", "epoch": epoch, "optimizer_steps": 5 * epoch,
            "train_loss": None if epoch == 0 else 2.0 / epoch, "val_metric": 60.0 + epoch,
            "metric": "accuracy", "lr": 1e-3, "elapsed_s": 2.0 * epoch, "eta_s": 40.0,
        }  # fmt: skip

    job = Job.objects.create(
        team=trained_model_version.project.team,
        project=trained_model_version.project,
        model_version=trained_model_version,
        recipe={
            "version": 1,
            "steps": [{"prune": {}}, {"distill": {"epochs": 20}}],
        },
        created_by=owner.user,
    )
    job.claim(worker="w@test")
    job.record_training(point(0))
    job.record_training(point(1))

    page.goto(f"{live_server.url}/accounts/login/?next=/jobs/{job.uuid}/")
    page.fill("#id_username", owner.user.username)
    page.fill("#id_password", OWNER_PASSWORD)
    page.click("button[type=submit]")
    live = page.get_by_test_id("live-training")
    expect(live).to_contain_text("epoch 1 of up to 20")
    expect(live.locator("canvas")).to_have_attribute("data-drawn", "1")

    job.record_training(point(2))
    expect(live).to_contain_text("epoch 2 of up to 20", timeout=10_000)
    expect(live).to_contain_text("validation top-1 62.00%")
    expect(live.locator("canvas")).to_have_attribute("data-drawn", "1")
    # Swapped every 2 s: the charts of replaced canvases are destroyed (without that their
    # count would only grow), and the one left holds the new epoch.
    page.wait_for_timeout(2500)
    page.wait_for_function(
        "() => { const charts = Object.values(Chart.instances);"
        " return charts.length === 1 && charts[0].data.labels.length === 3; }",
        timeout=5_000,
    )
    _shot(page, "06-live-training")
