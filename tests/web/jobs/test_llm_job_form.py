"""The job form on a language model: only the language-model presets, modes and text
datasets (or none: the bundled prose), llm-int4 to start from, the mode's settings and the
measurement settings (evaluate.llm) as fields; and on an ONNX graph none of them."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from compress_engine import Recipe
from compress_engine.presets import PRESETS

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def _page(client, version) -> str:
    return client.get(reverse("registry-model-version", args=[version.uuid])).content.decode()


def _builder(client, version, data: dict) -> str:
    response = client.post(reverse("jobs-builder", args=[version.uuid]), data, **HX)
    assert response.status_code == 200
    return response.content.decode()


def _yaml(page: str) -> str:
    text = page.split('id="job-recipe"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    return html.unescape(text)


def _options(page: str, select_id: str) -> list[str]:
    select = page.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    return re.findall(r'<option value="([^"]*)"', select)


def _selected(page: str, select_id: str) -> str | None:
    select = page.split(f'id="{select_id}"', 1)[1].split("</select>", 1)[0]
    found = re.search(r'<option value="([^"]*)" selected', select)
    return found[1] if found else None


def _techniques(page: str) -> list[str]:
    return re.findall(r'data-testid="builder-step" data-technique="([^"]+)"', page)


def _start_disabled(page: str) -> bool:
    button = re.search(r'<button type="submit" data-testid="start-job"[^>]*>', page).group(0)
    return "disabled" in button


LLM_PRESETS = [name for name, p in PRESETS.items() if p.llm]


def test_it_offers_a_language_model_only_its_presets_modes_and_text(
    client, owner, llm_version, dataset, text_dataset
):
    client.force_login(owner.user)
    page = _page(client, llm_version)

    assert LLM_PRESETS == ["llm-int4", "llm-int8", "llm-auto"]
    assert _options(page, "job-preset") == LLM_PRESETS
    assert _selected(page, "job-preset") == "llm-int4"
    assert "a causal language model" in page.split('data-testid="preset-suggestion"')[1][:300]
    assert 'id="add-technique"' not in page  # one step, already there: switched, not added
    assert _options(page, "step-0-technique") == ["quantize:weight-only", "quantize:llm-auto"]
    assert _techniques(page) == ["quantize:weight-only"]
    # Only the text dataset, the newest text picked to calibrate on; the .npz is not offered.
    assert _options(page, "job-dataset") == ["", str(text_dataset.uuid)]
    assert _selected(page, "job-dataset") == str(text_dataset.uuid)
    assert "None: the bundled prose" in page
    recipe = Recipe.parse(_yaml(page))
    quantize = recipe.steps[0].quantize
    assert (quantize.mode, quantize.bits, quantize.method) == ("weight-only", 4, "awq")
    # The mode's settings are fields, generated from the schema like any step's.
    for name in ("bits", "method", "block_size", "symmetric", "accuracy_level", "int8"):
        assert f'id="step-0-{name}"' in page
    for onnx_only in ("data-split", "teachers", "normalisation"):
        assert f'data-testid="{onnx_only}"' not in page
    use = re.sub(r"<[^>]+>", "", page.split('data-testid="llm-text-use">', 1)[1].split("</p>")[0])
    assert f"From the dataset {text_dataset.name!r}".replace("'", "&#x27;") in use
    assert "16 windows of 256 tokens" in use and "32 other windows calibrate" in use
    assert not _start_disabled(page)


def test_it_says_the_bundled_prose_is_used_without_a_text_dataset(client, owner, llm_version):
    client.force_login(owner.user)
    page = _page(client, llm_version)
    assert _selected(page, "job-dataset") is None
    use = page.split('data-testid="llm-text-use">', 1)[1].split("</p>")[0]
    assert "the bundled prose (English text from Python&#x27;s documentation topics)" in use


def test_it_hides_the_language_model_presets_and_modes_from_an_onnx_graph(
    client, owner, model_version, dataset, text_dataset
):
    client.force_login(owner.user)
    page = _page(client, model_version)
    assert not set(LLM_PRESETS) & set(_options(page, "job-preset"))
    techniques = _options(page, "add-technique")
    assert "quantize:static-int8" in techniques
    assert not {"quantize:weight-only", "quantize:llm-auto"} & set(techniques)
    assert _options(page, "job-dataset") == ["", str(dataset.uuid)]  # no text dataset
    assert 'data-testid="llm-measurement"' not in page


def test_it_writes_the_measurement_fields_to_evaluate_llm_and_keeps_them_across_presets(
    client, owner, llm_version
):
    client.force_login(owner.user)
    start = Recipe.from_dict(PRESETS["llm-int4"].recipe().to_dict()).to_yaml()
    page = _builder(
        client,
        llm_version,
        {
            "action": "llm",
            "recipe": start,
            "llm-window_tokens": "128",
            "llm-max_perplexity_increase": "",  # nullable: no budget
            "llm-measure_memory": ["false"],
        },
    )
    llm = Recipe.parse(_yaml(page)).evaluate.llm
    assert (llm.window_tokens, llm.max_perplexity_increase, llm.measure_memory) == (
        128,
        None,
        False,
    )
    assert 'id="llm-window_tokens" name="llm-window_tokens" value="128"' in page
    # Another preset keeps the measurement settings chosen on the form.
    page = _builder(
        client, llm_version, {"action": "preset", "preset": "llm-auto", "recipe": _yaml(page)}
    )
    recipe = Recipe.parse(_yaml(page))
    assert recipe.steps[0].quantize.mode == "llm-auto" and recipe.evaluate.llm.window_tokens == 128


def test_it_marks_an_out_of_range_measurement_setting_and_blocks_submission(
    client, owner, llm_version
):
    client.force_login(owner.user)
    page = _builder(
        client,
        llm_version,
        {
            "action": "llm",
            "recipe": PRESETS["llm-int8"].recipe().to_yaml(),
            "llm-window_tokens": "4",
        },
    )
    field = page.split('data-field="window_tokens"', 1)[1]
    field = field.split('data-field="evaluation_windows"', 1)[0]
    assert "greater than or equal to 16" in field and 'data-testid="field-error"' in field
    assert _start_disabled(page)


def test_it_refuses_an_onnx_recipe_and_a_non_text_dataset_for_a_language_model(
    client, owner, llm_version, dataset
):
    client.force_login(owner.user)
    page = _builder(
        client,
        llm_version,
        {"action": "yaml", "recipe": PRESETS["fast-int8"].recipe().to_yaml()},
    )
    error = html.unescape(page.split('data-testid="dataset-error">', 1)[1].split("</small>")[0])
    assert "is a language model: its recipe has one step" in error
    assert _start_disabled(page)
    page = _builder(
        client,
        llm_version,
        {
            "action": "dataset",
            "recipe": PRESETS["llm-int4"].recipe().to_yaml(),
            "dataset": str(dataset.uuid),
        },
    )
    error = html.unescape(page.split('data-testid="dataset-error">', 1)[1].split("</small>")[0])
    assert f"The dataset {dataset.name!r} holds arrays (.npz)" in error
    assert "choose a text dataset (.txt or .jsonl), or none for the bundled prose" in error


def test_it_starts_an_llm_int4_job_from_the_form(client, owner, llm_version, text_dataset):
    from jobs.models import Job
    from jobs.routing import cpu_queue

    client.force_login(owner.user)
    recipe = PRESETS["llm-int4"].recipe().to_yaml()
    response = client.post(
        reverse("jobs-create", args=[llm_version.uuid]),
        {"recipe": recipe, "dataset": str(text_dataset.uuid)},
    )
    job = Job.objects.get()
    assert response.status_code == 302 and job.dataset == text_dataset
    assert job.recipe_obj.steps[0].quantize.mode == "weight-only"
    assert job.queue == cpu_queue()  # quantization only: no GPU worker wanted
