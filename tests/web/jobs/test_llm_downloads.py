"""Downloads of a language-model job, stored the way the worker stores them (a real run of the
tiny llama): the genai zip, named for what it is, downloads byte for byte; the deployment
bundle holds it with a README that says how to run it and a REPORT.md with the figures, the
per-layer precision and the answers side by side."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.urls import reverse

from compress_engine import Report

pytestmark = pytest.mark.django_db


def test_it_offers_the_genai_zip_for_download(client, owner, stored_llm_job, llm_runs):
    [artifact] = stored_llm_job.artifacts.all()
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[stored_llm_job.uuid])).content.decode()
    response = client.get(reverse("jobs-artifact", args=[artifact.uuid]))

    row = page.split('data-testid="artifact-row"', 1)[1].split("</tr>", 1)[0]
    assert reverse("jobs-artifact", args=[artifact.uuid]) in row
    assert 'data-format="genai-zip">onnxruntime-genai folder (zip)<' in row
    body = b"".join(response.streaming_content)
    assert body == (llm_runs["int4"]["out"] / "model.genai.zip").read_bytes()
    assert 'filename="model.genai.zip"' in response["Content-Disposition"]


def test_its_bundle_holds_the_genai_zip_and_a_language_model_report(
    client, owner, stored_llm_job, llm_runs
):
    report = Report.model_validate(llm_runs["int4"]["report"])
    llm = report.llm
    client.force_login(owner.user)

    response = client.get(reverse("jobs-bundle", args=[stored_llm_job.uuid]))

    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as zf:
        names = set(zf.namelist())
        stored = zf.read("models/model.genai.zip")
        readme = zf.read("README.md").decode()
        markdown = zf.read("REPORT.md").decode()
    assert names == {
        "models/model.genai.zip",
        "README.md",
        "REPORT.md",
        "report.json",
        "recipe.yaml",
    }
    assert stored == (llm_runs["int4"]["out"] / "model.genai.zip").read_bytes()
    assert "pip install onnxruntime-genai" in readme and "python model/chat.py" in readme
    assert markdown.startswith("# Compression report: language model")
    o, r = llm.original, llm.result
    assert (
        f"| perplexity | {o.perplexity:.3f} | {r.perplexity:.3f} | {llm.ppl_delta_pct:+.2f}% |"
        in markdown
    )
    assert f"| {llm.decode_ratio:.2f}x |" in markdown and "| peak resident memory |" in markdown
    assert "int4 weights (rtn, blocks of 32, symmetric) in the MatMulNBits form" in markdown
    assert "## Per-layer precision" in markdown and "| lm_head | 0 | 1 | 0 |" in markdown
    [answer] = llm.generations
    assert "## Answers side by side (greedy)" in markdown
    assert f"**Prompt:** {answer.prompt}" in markdown
    assert (
        f"- compressed ({answer.compressed_tok_s:.1f} tokens/s): {answer.compressed!r}" in markdown
    )
    assert f"`{report.artifacts[0].sha256}`" in markdown
    # Nothing of the ONNX report: no latency per batch, fidelity table or charts.
    assert "Latency p50, batch" not in markdown and "## Fidelity" not in markdown


def test_its_report_says_loudly_when_the_result_decodes_slower(llm_runs):
    from compress_engine.bundle import bundle_texts
    from llm_jobs import slower_report

    report = Report.model_validate(slower_report(llm_runs["int4"]["report"]))

    texts = bundle_texts(report)

    for name in ("README.md", "REPORT.md"):
        assert "> **Not recommended:**" in texts[name]
        assert "> **Slower than the original:**" in texts[name]
        assert "Not a speed win" in texts[name]
    assert "**not met**" in texts["REPORT.md"]
