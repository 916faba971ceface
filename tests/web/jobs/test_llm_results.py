"""The results page of a language-model job, read from a real run of the tiny llama: the
figures table, the method, per-layer precision, the answers side by side and the place left
for the prompt form; no ONNX-only section; a result slower than the original said so loudly;
the auto search's plans when there are some."""

from __future__ import annotations

import copy
import html
import re

import pytest
from django.urls import reverse

from compress_engine import Report
from llm_jobs import slower_report

pytestmark = pytest.mark.django_db


def _page(client, owner, job) -> str:
    client.force_login(owner.user)
    return html.unescape(client.get(reverse("jobs-detail", args=[job.uuid])).content.decode())


def _section(page: str, testid: str, end: str = "</table>") -> str:
    """The element's contents (from the end of its tag) up to `end`."""
    return page.split(f'data-testid="{testid}"', 1)[1].split(">", 1)[1].split(end, 1)[0]


def _text(fragment: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", fragment).split())


def test_it_shows_the_language_model_figures_method_layers_and_answers(
    client, owner, llm_version, succeeded_llm_job, llm_runs
):
    stored = llm_runs["int4"]["report"]
    job = succeeded_llm_job(llm_version, stored)
    llm = Report.model_validate(stored).llm

    page = _page(client, owner, job)

    figures = _text(_section(page, "llm-figures"))
    o, r = llm.original, llm.result
    assert f"Perplexity {o.perplexity:.3f} {r.perplexity:.3f} {llm.ppl_delta_pct:+.2f}%" in figures
    assert (
        f"{o.decode_tok_s:.1f} ({o.decode_tok_s_low:.1f}–{o.decode_tok_s_high:.1f}) "
        f"{r.decode_tok_s:.1f} ({r.decode_tok_s_low:.1f}–{r.decode_tok_s_high:.1f}) "
        f"{llm.decode_ratio:.2f}×" in figures
    )
    assert f"Prefill, 64 tokens {o.prefill_ms:.1f} ms {r.prefill_ms:.1f} ms" in figures
    assert f"Time to first token {o.ttft_ms:.1f} ms {r.ttft_ms:.1f} ms" in figures
    assert f"{o.peak_rss_mb:.0f} MB {r.peak_rss_mb:.0f} MB" in figures
    assert f"Next-token agreement {100 * llm.next_token_agreement:.1f}%" in figures
    assert f"{r.size_bytes / o.size_bytes:.3f}×" in figures
    method = _text(_section(page, "llm-method", "</p>"))
    assert "int4 weights (rtn, blocks of 32, symmetric) in the MatMulNBits form" in method
    # Per role and bits, from the report's list of matrices; the full list folded away.
    groups = _section(page, "llm-layer-groups")
    roles = {layer.role for layer in llm.layers}
    for role in roles:
        row = _text(groups.split(f'data-role="{role}">', 1)[1].split("</tr>", 1)[0])
        count = [sum(1 for x in llm.layers if x.role == role and x.bits == b) for b in (4, 8, None)]
        assert row == f"{role} {count[0]} {count[1]} {count[2]}"
    listed = _section(page, "llm-layers", "</details>")
    assert all(f"<code>{layer.name}</code>" in listed for layer in llm.layers)
    [answer] = llm.generations
    generation = _section(page, "llm-generation", "</article>")
    assert "What is the capital of France?" in generation
    for side, text in (("original", answer.original), ("compressed", answer.compressed)):
        shown = _section(generation, f"llm-answer-{side}", "</div>")
        # The tiny random model may answer with newlines only: said so rather than blank.
        assert (
            f'<pre class="llm-answer">{text}</pre>' if text.strip() else "(only whitespace"
        ) in shown
    assert f"{answer.compressed_tok_s:.1f} tokens/s" in generation
    assert 'id="llm-prompt"' in page  # left for the prompt form
    # The ONNX-only sections would mislead: none of them is shown.
    for testid in ("comparison", "fidelity", "runtimes", "accuracy", "quant-choices", "trials"):
        assert f'data-testid="{testid}"' not in page
    assert "Latency p50, batch" not in page
    assert 'data-testid="llm-trials"' not in page  # a single plan: no search table
    # The artifact is named for what it is; the verdict says budget and speed.
    assert "onnxruntime-genai folder (zip)" in _section(page, "artifacts")
    assert "model.genai.zip was loaded by onnxruntime-genai" in page
    verdict = _text(_section(page, "llm-verdict", "</p>"))
    assert ("Recommended" in verdict) is Report.model_validate(stored).recommended


def test_it_never_presents_a_slower_result_as_a_win(
    client, owner, llm_version, succeeded_llm_job, llm_runs
):
    report = slower_report(llm_runs["int4"]["report"])
    job = succeeded_llm_job(llm_version, report)

    page = _page(client, owner, job)

    alert = _text(_section(page, "llm-slower", "</div>"))
    assert alert.startswith("Slower than the original.") and "not a speed win" in alert
    assert 'data-testid="not-recommended-badge"' in page
    assert "it decodes slower than the original" in _text(_section(page, "llm-verdict", "</p>"))
    decode = _section(page, "llm-figures").split("Decode tokens/s", 1)[1].split("</tr>", 1)[0]
    assert 'class="worse"' in decode and "slower than the original" in decode


def test_it_lists_the_auto_search_plans_with_the_kept_one(
    client, owner, llm_version, succeeded_llm_job, llm_runs
):
    report = copy.deepcopy(llm_runs["int4"]["report"])
    size = report["llm"]["original"]["size_bytes"]
    base = report["llm"]["original"]["perplexity"]
    trials = [
        ("int4 everywhere", [], 0.16, 1.30, False, False),
        ("int4, lm_head at int8", ["lm_head"], 0.18, 1.08, True, True),
    ]
    report["llm"]["trials"] = [
        {
            "label": label,
            "int8_layers": int8,
            "size_bytes": int(ratio * size),
            "size_ratio": ratio,
            "perplexity": base * factor,
            "ppl_delta_pct": 100 * (factor - 1),
            "within_size": True,
            "meets_budget": meets,
            "kept": kept,
        }
        for label, int8, ratio, factor, meets, kept in trials
    ]
    report["llm"]["max_size_ratio"] = 0.19
    job = succeeded_llm_job(llm_version, Report.model_validate(report).model_dump(mode="json"))

    page = _page(client, owner, job)

    table = _section(page, "llm-trials")
    body = table.split("<tbody>", 1)[1]
    rows = [_text(r.split(">", 1)[1]) for r in body.split("<tr")[1:]]
    assert rows[0].startswith("int4 everywhere 0.160× ") and rows[0].endswith("+30.00% yes no")
    assert rows[1].startswith("int4, lm_head at int8 (kept) 0.180×")
    assert rows[1].endswith("+8.00% yes yes")
    assert table.count("data-kept") == 1
    assert "size budget 0.19 of the original, perplexity budget +10%" in _text(page)
