"""The results page lists the quantize step's measured choices (option, chosen, why, and each
build measured), read from the Report: here a real static int8 run of a depthwise conv whose
bias correction "auto" kept."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def corrected_report(tmp_path_factory) -> dict[str, Any]:
    from compress_engine import compress
    from compress_engine.data import Dataset
    from depthwise_models import positive_images, write_offset_depthwise

    d = tmp_path_factory.mktemp("choices-web")
    recipe = {
        "steps": [{"quantize": {"mode": "static-int8"}}],
        "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 16},
    }
    data = Dataset({"input": positive_images(256, seed=4)})
    report = compress(write_offset_depthwise(d / "dw.onnx"), recipe, data=data, out_dir=d / "out")
    return report.model_dump(mode="json")


def test_it_lists_each_choice_with_its_reason_and_builds(
    client, owner, model_version, succeeded_job, corrected_report
):
    choices = corrected_report["quantization"]["choices"]
    [choice] = [c for c in choices if c["option"] == "bias_correction"]
    job = succeeded_job(model_version, corrected_report)
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    table = page.split('data-testid="quant-choices"', 1)[1].split("</table>", 1)[0]
    assert table.count('data-testid="quant-choice"') == len(choices)
    row = table.split('data-option="bias_correction"', 1)[1].split("</tr>", 1)[0]
    assert "<td>on</td>" in row and choice["chosen"] == "on"
    assert "held-out calibration samples" in row
    without, with_ = choice["trials"]
    assert f"without: cosine {without['fidelity']:.5f}" in row
    assert f"with: cosine {with_['fidelity']:.5f}" in row


def test_it_shows_no_choices_table_when_nothing_was_chosen(
    client, owner, model_version, succeeded_job, base_report
):
    # As in reports written before the engine recorded choices.
    report = copy.deepcopy(base_report)
    report["quantization"]["choices"] = []
    job = succeeded_job(model_version, report)
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    assert "What was quantized" in page and 'data-testid="quant-choices"' not in page
