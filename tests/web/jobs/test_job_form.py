"""The job form: a step builder generated from the recipe schema, kept in sync with the YAML
that is submitted, and the engine's refusals shown before submission."""

from __future__ import annotations

import html
import re

import pytest
import yaml
from django.urls import reverse

from compress_engine import Recipe
from compress_engine.presets import PRESETS
from compress_engine.torch_configs import PruneConfig
from jobs.models import Job
from jobs.recipe_builder import field_specs, techniques

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


def _builder(client, version, data: dict) -> str:
    response = client.post(reverse("jobs-builder", args=[version.uuid]), data, **HX)
    assert response.status_code == 200
    return response.content.decode()


def _yaml(page: str) -> str:
    text = page.split('id="job-recipe"', 1)[1].split(">", 1)[1].split("</textarea>", 1)[0]
    return html.unescape(text)


def _techniques(page: str) -> list[str]:
    return re.findall(r'data-testid="builder-step" data-technique="([^"]+)"', page)


def _start_disabled(page: str) -> bool:
    button = re.search(r'<button type="submit" data-testid="start-job"[^>]*>', page).group(0)
    return "disabled" in button


def test_it_reads_fields_from_the_json_schema():
    specs = {s.name: s for s in field_specs(PruneConfig)}
    amount = specs["amount"]
    assert amount.input == "float" and amount.default == 0.5
    assert (amount.minimum, amount.maximum) == (0.0, 0.95) and amount.bounds == "≥ 0, ≤ 0.95"
    schema = PruneConfig.model_json_schema()["properties"]
    assert amount.description == schema["amount"]["description"]
    assert specs["method"].input == "choice" and specs["method"].choices == ("channel", "magnitude")
    assert specs["round_to"].nullable and specs["ignore"].input == "list"
    # Every quantize mode of the engine is a technique, titled as the engine's pass.
    assert {"prune", "distill", "finetune", "quantize:static-int8", "quantize:fp16"} <= set(
        techniques()
    )
    assert techniques()["quantize:static-int8"].title == "Static int8 quantization"


def test_it_shows_the_builder_and_every_preset_title_on_the_model_page(
    client, owner, model_version
):
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid])).content
    page = page.decode()
    for preset in PRESETS.values():
        # The language-model presets are offered on language models only.
        assert (html.escape(preset.title) in page) is not preset.llm
    # A CNN without a dataset starts from automatic int8 (the engine's suggestion).
    assert _techniques(page) == ["quantize:auto"]
    assert Recipe.parse(_yaml(page)).steps[0].quantize.mode == "auto"
    assert not _start_disabled(page)


def _suggestion(page: str) -> str:
    found = re.search(r'data-testid="preset-suggestion">(.+?)</small>', page, re.S)
    return re.sub(r"<[^>]+>", "", html.unescape(found[1]))


def _selected_preset(page: str) -> str:
    select = page.split('id="job-preset"', 1)[1].split("</select>", 1)[0]
    return re.search(r'<option value="([^"]*)" selected', select)[1]


def test_it_starts_a_cnn_with_a_dataset_on_static_int8_and_says_why(
    client, owner, model_version, dataset
):
    """fast-int8 quantized only the last Gemm of a CNN and said nothing: a convolutional
    model with data starts on static int8, calibrated on the project's newest dataset."""
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid])).content
    page = page.decode()
    assert _techniques(page) == ["quantize:static-int8"]
    assert _selected_preset(page) == "static-int8"
    assert f'value="{dataset.uuid}" selected' in page
    suggestion = _suggestion(page)
    assert "Static int8 (calibrated)" in suggestion
    assert "convolutional" in suggestion and "calibrated on your dataset" in suggestion
    assert not _start_disabled(page)


def test_it_starts_a_cnn_without_a_dataset_on_auto(client, owner, model_version):
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid])).content
    page = page.decode()
    assert _selected_preset(page) == "auto"
    assert "convolutional" in _suggestion(page) and "no dataset" in _suggestion(page)


def test_it_starts_a_matmul_model_on_dynamic_int8(client, owner, project, tiny_mlp_onnx, dataset):
    from conftest import _ingest
    from registry.services import ingest_model_upload

    mlp = _ingest(ingest_model_upload, project, owner, tiny_mlp_onnx)
    client.force_login(owner.user)
    page = client.get(reverse("registry-model-version", args=[mlp.uuid])).content.decode()
    assert _techniques(page) == ["quantize:dynamic-int8"]
    assert _selected_preset(page) == "fast-int8"
    assert "MatMul/Gemm-heavy" in _suggestion(page)
    # Dynamic int8 needs no data: no dataset is picked for it.
    assert "selected" not in page.split('id="job-dataset"', 1)[1].split("</select>")[0]


def test_it_adds_steps_in_an_order_the_engine_accepts_and_regenerates_the_yaml(
    client, owner, model_version
):
    client.force_login(owner.user)
    start = {
        "recipe": "version: 1\nsteps:\n  - quantize: {mode: dynamic-int8}\n"
        "evaluate: {latency_runs: 7}\n",
        "steps-0-technique": "quantize:dynamic-int8",
    }
    page = _builder(client, model_version, {**start, "action": "add", "add-technique": "prune"})
    # Prune goes before the quantize step, where the engine wants it.
    assert _techniques(page) == ["prune", "quantize:dynamic-int8"]
    recipe = Recipe.parse(_yaml(page))
    assert [type(s).__name__ for s in recipe.steps] == ["PruneStep", "QuantizeStep"]
    assert recipe.steps[0].prune.amount == 0.5  # the schema's default
    assert recipe.evaluate.latency_runs == 7  # sections the builder does not own are kept
    assert 'id="step-0-amount"' in page  # the new step's fields arrived with it


def test_it_marks_an_invalid_value_next_to_its_field_and_blocks_submission(
    client, owner, model_version
):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "build",
            "recipe": "version: 1\nsteps: [{prune: {}}]\n",
            "steps-0-technique": "prune",
            "steps-0-amount": "2",
        },
    )
    field = page.split('data-field="amount"', 1)[1].split('data-field="target_macs"', 1)[0]
    assert 'data-testid="field-error"' in field
    assert "less than or equal to 0.95" in field
    assert _start_disabled(page) and "Fix what is marked above" in page
    # The YAML shows what the builder holds, so the two never disagree.
    assert yaml.safe_load(_yaml(page))["steps"][0]["prune"]["amount"] == 2


def test_it_reports_a_rule_across_fields_on_the_step(client, owner, model_version):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "build",
            "recipe": "version: 1\nsteps: [{prune: {}}]\n",
            "steps-0-technique": "prune",
            "steps-0-method": "magnitude",
            "steps-0-iterations": "3",
        },
    )
    assert re.search(r'data-testid="step-error">iterations apply to method channel<', page)
    assert _start_disabled(page)


def test_it_swaps_the_fields_when_the_technique_changes(client, owner, model_version):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "build",
            "recipe": "version: 1\nsteps: [{quantize: {mode: dynamic-int8}}]\n",
            "steps-0-technique": "quantize:static-int8",
            "steps-0-per_channel": ["false", "true"],
        },
    )
    assert _techniques(page) == ["quantize:static-int8"]
    assert 'id="step-0-calibration"' in page and 'id="step-0-op_types' not in page
    # A setting both modes have carries over.
    assert Recipe.parse(_yaml(page)).steps[0].quantize.per_channel is True


def test_it_removes_a_step(client, owner, model_version):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "remove-0",
            "recipe": "",
            "steps-0-technique": "prune",
            "steps-1-technique": "quantize:fp16",
        },
    )
    assert _techniques(page) == ["quantize:fp16"]
    assert [list(s) for s in yaml.safe_load(_yaml(page))["steps"]] == [["quantize"]]


def test_it_rebuilds_the_builder_from_pasted_yaml(client, owner, model_version, dataset):
    client.force_login(owner.user)
    pasted = (
        "version: 1\nsteps:\n  - prune: {amount: 0.25}\n  - distill: {epochs: 2}\n"
        "  - quantize: {mode: static-int8, samples: 64}\n"
    )
    page = _builder(
        client,
        model_version,
        {"action": "yaml", "recipe": pasted, "dataset": str(dataset.uuid)},
    )
    assert _techniques(page) == ["prune", "distill", "quantize:static-int8"]
    assert re.search(r'id="step-0-amount" name="steps-0-amount" value="0.25"', page)
    assert re.search(r'id="step-2-samples" name="steps-2-samples" value="64"', page)
    assert _yaml(page) == pasted  # the typed YAML is what is submitted, unchanged
    assert not _start_disabled(page)


def test_it_explains_a_yaml_error_and_keeps_the_builder(client, owner, model_version):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "yaml",
            "recipe": "version: 1\nsteps:\n  - quantize: {mode: sparkle-int3}\n",
            "steps-0-technique": "prune",
        },
    )
    assert 'data-testid="recipe-error"' in page and "mode" in page
    assert _techniques(page) == ["prune"] and _start_disabled(page)


def test_it_says_next_to_the_dataset_that_static_int8_needs_one(
    client, owner, model_version, dataset
):
    client.force_login(owner.user)
    page = _builder(client, model_version, {"action": "preset", "preset": "static-int8"})
    error = re.search(r'data-testid="dataset-error">([^<]+)<', page)
    assert error and "needs calibration samples: choose a dataset" in error.group(1)
    assert _start_disabled(page)
    with_data = _builder(
        client,
        model_version,
        {"action": "yaml", "recipe": _yaml(page), "dataset": str(dataset.uuid)},
    )
    assert 'data-testid="dataset-error"' not in with_data and not _start_disabled(with_data)


def test_it_says_finetune_needs_labels_before_submission(
    client, owner, model_version, unlabelled_dataset
):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "add",
            "add-technique": "finetune",
            "recipe": "version: 1\nsteps: [{prune: {}}]\n",
            "steps-0-technique": "prune",
            "dataset": str(unlabelled_dataset.uuid),
        },
    )
    assert _techniques(page) == ["prune", "finetune"]
    error = re.search(r'data-testid="dataset-error">([^<]+)<', page)
    assert error and "Fine-tuning trains on labels" in html.unescape(error.group(1))
    assert _start_disabled(page)


def test_it_refuses_a_distill_step_after_magnitude_pruning_with_the_engines_reason(
    client, owner, model_version, dataset
):
    client.force_login(owner.user)
    page = _builder(
        client,
        model_version,
        {
            "action": "add",
            "add-technique": "distill",
            "recipe": "version: 1\nsteps: [{prune: {method: magnitude}}]\n",
            "steps-0-technique": "prune",
            "steps-0-method": "magnitude",
            "dataset": str(dataset.uuid),
        },
    )
    assert "would train the zeroed weights back" in page and _start_disabled(page)


def test_it_renders_a_whole_page_without_htmx(client, owner, model_version):
    client.force_login(owner.user)
    response = client.post(
        reverse("jobs-builder", args=[model_version.uuid]),
        {"action": "preset", "preset": "prune-distill"},
    )
    page = response.content.decode()
    assert response.status_code == 200 and "<html" in page and "<h1>New job</h1>" in page
    assert _techniques(page) == ["prune", "distill"]


def test_it_shows_a_refused_job_again_with_the_recipe_as_sent(client, owner, model_version):
    client.force_login(owner.user)
    sent = "version: 1\nsteps:\n  - quantize: {mode: static-int8, samples: 12}\n"
    response = client.post(reverse("jobs-create", args=[model_version.uuid]), {"recipe": sent})
    assert response.status_code == 422 and not Job.objects.exists()
    page = response.content.decode()
    assert "The job was not started" in page and _yaml(page) == sent


def test_it_lets_viewers_see_the_form_but_not_start(client, viewer, model_version):
    client.force_login(viewer.user)
    page = client.get(reverse("registry-model-version", args=[model_version.uuid])).content
    page = page.decode()
    assert 'data-testid="viewer-note"' in page and _start_disabled(page)
    # The builder itself only reads: a viewer may try recipes.
    assert _techniques(_builder(client, model_version, {"action": "preset", "preset": "auto"}))


def test_it_hides_the_builder_from_outsiders(client, outsider, model_version):
    client.force_login(outsider.user)
    url = reverse("jobs-builder", args=[model_version.uuid])
    assert client.post(url, {"action": "preset", "preset": "auto"}, **HX).status_code == 404
