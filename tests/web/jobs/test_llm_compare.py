"""The compare page with language-model jobs: two real runs of the tiny llama (int4 and int8)
compare on size, perplexity, next-token agreement, decode speed and memory; a language-model
job picked with an ONNX job is refused, saying why."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from compress_engine import Report

pytestmark = pytest.mark.django_db


def _url(*jobs) -> str:
    return reverse("jobs-compare") + "?" + "&".join(f"jobs={j.uuid}" for j in jobs)


def _row(page: str, label: str) -> list[tuple[str, bool]]:
    """(text, best) of each cell of the row labelled `label`."""
    row = re.search(
        rf'<tr data-testid="compare-row">\s*<th scope="row">{re.escape(label)}</th>(.*?)</tr>',
        page,
        re.S,
    )
    assert row, label
    cells = re.findall(r'<td class="nowrap( best| tie)?"[^>]*>([^<]*)', row.group(1))
    return [(html.unescape(text.strip()), best == " best") for best, text in cells]


def test_it_compares_language_model_jobs_on_their_own_figures(
    client, owner, llm_version, succeeded_llm_job, llm_runs
):
    jobs = [succeeded_llm_job(llm_version, llm_runs[k]["report"]) for k in ("int4", "int8")]
    int4, int8 = (Report.model_validate(llm_runs[k]["report"]).llm for k in ("int4", "int8"))
    client.force_login(owner.user)

    response = client.get(_url(*jobs))

    page = response.content.decode()
    assert response.status_code == 200
    assert [t for t, _ in _row(page, "Perplexity")] == [
        f"{int4.result.perplexity:.3f}",
        f"{int8.result.perplexity:.3f}",
    ]
    assert [t for t, _ in _row(page, "Perplexity change")] == [
        f"{int4.ppl_delta_pct:+.2f}%",
        f"{int8.ppl_delta_pct:+.2f}%",
    ]
    assert [t for t, _ in _row(page, "Decode vs original")] == [
        f"{int4.decode_ratio:.2f}×",
        f"{int8.decode_ratio:.2f}×",
    ]
    assert [t for t, _ in _row(page, "Peak resident memory")] == [
        f"{int4.result.peak_rss_mb:.0f} MB",
        f"{int8.result.peak_rss_mb:.0f} MB",
    ]
    # int4 weights are smaller than int8 ones: an exact figure, so a best.
    assert int4.result.size_bytes < int8.result.size_bytes
    assert [best for _, best in _row(page, "Model and data files")] == [True, False]
    # Medians without a spread are never marked best.
    assert [best for _, best in _row(page, "Prefill")] == [False, False]
    for onnx_row in ("p50, batch 1", "Top-1 accuracy", "Fidelity cosine", "Parameters"):
        assert f'<th scope="row">{onnx_row}</th>' not in page
    assert "Language models." in page.split('data-testid="compare-legend"', 1)[1]


def test_it_marks_decode_speeds_within_the_spread_of_their_rounds_as_a_tie(llm_runs):
    from jobs.compare import compare_rows

    one = Report.model_validate(llm_runs["int4"]["report"])
    other = one.model_copy(deep=True)
    r = other.llm.result
    # Faster by less than the spread of its rounds: a tie, not a win.
    spread = max(r.decode_tok_s_high - r.decode_tok_s, r.decode_tok_s - r.decode_tok_s_low)
    r.decode_tok_s += spread / 2
    [row] = [row for row in compare_rows([one, other]) if row.label == "Decode tokens/s (median)"]
    assert [c.tie for c in row.cells] == [True, True]
    assert "spread of its decode rounds" in row.cells[0].noise


def test_it_refuses_to_compare_a_language_model_job_with_an_onnx_job(
    client, owner, llm_version, model_version, succeeded_llm_job, succeeded_job, llm_runs,
    base_report,
):  # fmt: skip
    llm_job = succeeded_llm_job(llm_version, llm_runs["int4"]["report"])
    onnx_job = succeeded_job(model_version, base_report)
    client.force_login(owner.user)

    response = client.get(_url(llm_job, onnx_job))

    assert response.status_code == 400
    problem = response.content.decode().split('data-testid="compare-problem">', 1)[1]
    assert problem.startswith("Language-model jobs compare only with language-model jobs")
    assert "1 of the 2 jobs picked are language-model jobs" in problem
