"""Language-model jobs in the lists and the API: the project's jobs table and trade-off chart
show their size ratio, per-token latency ratio and perplexity change; /api/v1 starts one from
the llm-int4 preset (or a blank recipe), sums up its report, and refuses a recipe or dataset
for the other kind of model with a message that says what to use."""

from __future__ import annotations

import html
import json

import pytest
from django.urls import reverse

from compress_engine import Report
from jobs.dashboard import scatter
from jobs.models import Job
from llm_jobs import llm_recipe

pytestmark = pytest.mark.django_db


@pytest.fixture
def token_for():
    from accounts.tokens import create_token

    return lambda persona: create_token(user=persona.user, name="tests").raw


def _post(client, token: str, path: str, payload: dict):
    return client.post(
        f"/api/v1{path}",
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def test_it_lists_language_model_jobs_with_their_ratios_and_perplexity_change(
    client, owner, llm_version, succeeded_llm_job, llm_runs
):
    jobs = {k: succeeded_llm_job(llm_version, llm_runs[k]["report"]) for k in ("int4", "int8")}
    client.force_login(owner.user)

    page = client.get(reverse("registry-project", args=[llm_version.project.uuid]))

    assert page.status_code == 200
    text = html.unescape(page.content.decode())
    for name, job in jobs.items():
        report = Report.model_validate(llm_runs[name]["report"])
        row = text.split(f'data-job="{job.uuid}"', 1)[1].split("</tr>", 1)[0]
        assert f"{report.size_ratio:.3f}×" in row and f"{report.latency_ratio:.3f}×" in row
        delta = report.llm.ppl_delta_pct
        assert f"ppl {'+' if delta >= 0 else ''}{delta:.2f}%" in row
        # Latency per generated token: the inverse of the decode speed ratio.
        assert report.latency_ratio == pytest.approx(1 / report.llm.decode_ratio)
    [chart] = scatter(llm_version.project)["charts"]
    assert chart["metric"] == "perplexity" and "lower is better" in chart["metric_label"]
    points = {p["job"]: p for p in chart["points"]}
    assert set(points) == {str(j.uuid) for j in jobs.values()}
    int4 = Report.model_validate(llm_runs["int4"]["report"])
    assert points[str(jobs["int4"].uuid)]["metric"] == round(int4.llm.ppl_delta_pct, 6)
    # The front is drawn from the recommended jobs only (a run can miss on timing noise).
    assert bool(chart["front"]) is any(p["recommended"] for p in points.values())
    assert all(p["recommended"] for p in chart["front"])


def test_the_api_starts_an_llm_int4_job_and_lists_the_presets_for_language_models(
    client, owner, token_for, llm_version, text_dataset
):
    token = token_for(owner)
    presets = client.get("/api/v1/presets", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert {p["name"] for p in presets if p["llm"]} == {"llm-int4", "llm-int8", "llm-auto"}

    response = _post(
        client,
        token,
        f"/models/{llm_version.uuid}/jobs",
        {"preset": "llm-int4", "dataset": str(text_dataset.uuid)},
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(uuid=response.json()["id"])
    quantize = job.recipe_obj.steps[0].quantize
    assert (quantize.mode, quantize.bits, quantize.method) == ("weight-only", 4, "awq")
    # A blank recipe on a language model is its default preset, not dynamic int8.
    response = _post(client, token, f"/models/{llm_version.uuid}/jobs", {})
    assert response.status_code == 201, response.content
    assert Job.objects.get(uuid=response.json()["id"]).recipe_obj.steps[0].quantize.bits == 4


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        (
            "llm",
            {"preset": "fast-int8"},
            "is a language model: its recipe has one step, quantize with mode weight-only",
        ),
        ("onnx", {"recipe": llm_recipe()}, "Quantize modes weight-only and llm-auto are for"),
        ("onnx", {"preset": "llm-int4"}, "is an ONNX graph: use dynamic-int8, static-int8"),
    ],
)
def test_the_api_refuses_a_recipe_for_the_other_kind_of_model(
    client, owner, token_for, llm_version, model_version, kind, payload, message
):
    version = llm_version if kind == "llm" else model_version
    response = _post(client, token_for(owner), f"/models/{version.uuid}/jobs", payload)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert not Job.objects.exists()


def test_the_api_refuses_a_text_dataset_for_an_onnx_graph_and_arrays_for_a_language_model(
    client, owner, token_for, llm_version, model_version, dataset, text_dataset
):
    token = token_for(owner)
    response = _post(
        client, token, f"/models/{model_version.uuid}/jobs", {"dataset": str(text_dataset.uuid)}
    )
    assert response.status_code == 400
    assert "is text, for language models" in response.json()["detail"]
    response = _post(
        client,
        token,
        f"/models/{llm_version.uuid}/jobs",
        {"preset": "llm-int8", "dataset": str(dataset.uuid)},
    )
    assert response.status_code == 400
    assert "a language model calibrates and is measured on text" in response.json()["detail"]


def test_the_api_sums_up_a_language_model_report(
    client, owner, token_for, llm_version, succeeded_llm_job, llm_runs
):
    job = succeeded_llm_job(llm_version, llm_runs["int4"]["report"])
    llm = Report.model_validate(llm_runs["int4"]["report"]).llm

    body = client.get(
        f"/api/v1/jobs/{job.uuid}", HTTP_AUTHORIZATION=f"Bearer {token_for(owner)}"
    ).json()

    summary = body["summary"]
    assert summary["perplexity_change_pct"] == pytest.approx(llm.ppl_delta_pct)
    assert summary["decode_ratio"] == pytest.approx(llm.decode_ratio)
    assert summary["next_token_agreement"] == pytest.approx(llm.next_token_agreement)
    assert summary["cosine_similarity"] is None
