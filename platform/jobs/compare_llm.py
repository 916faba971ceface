"""The compare page's figures for language-model jobs (jobs.compare): size, perplexity and
its change, next-token agreement, decode tokens/s and its ratio to the original, prefill, time
to first token and peak memory, each read from the report's `llm` section.

Decode speeds tie when they differ by no more than the spread of their rounds (the median to
the farther of the slowest and fastest round); sizes and perplexities are exact figures, though
perplexities measured on different text compare only roughly (the legend says so). Prefill and
time to first token are medians with no spread recorded: shown, never marked best.
"""

from __future__ import annotations

from typing import Any

from django.template.defaultfilters import filesizeformat

from jobs.compare import Metric

_ROUNDS = "the spread of its decode rounds (slowest to fastest)"


def _llm(attr: str, side: str = "result") -> Any:
    def get(report: Any) -> float | None:
        llm = report.llm
        return None if llm is None else getattr(getattr(llm, side), attr)

    return get


def _decode_spread(report: Any) -> float | None:
    llm = report.llm
    if llm is None:
        return None
    r = llm.result
    return max(r.decode_tok_s_high - r.decode_tok_s, r.decode_tok_s - r.decode_tok_s_low, 0.0)


def _ratio_spread(report: Any) -> float | None:
    """The decode ratio's spread: the result's relative spread, applied to the ratio."""
    spread = _decode_spread(report)
    if spread is None or not report.llm.result.decode_tok_s:
        return None
    return report.llm.decode_ratio * spread / report.llm.result.decode_tok_s


def _details(attr: str) -> Any:
    def get(report: Any) -> float | None:
        return None if report.llm is None else getattr(report.llm, attr)

    return get


def llm_metrics() -> list[Metric]:
    return [
        Metric("Size", "Model and data files", _llm("size_bytes"), "min", filesizeformat),
        Metric("Size", "Size vs original", lambda r: r.size_ratio, "min", lambda v: f"{v:.3f}×"),
        Metric("Quality", "Perplexity", _llm("perplexity"), "min", lambda v: f"{v:.3f}"),
        Metric(
            "Quality", "Perplexity change", _details("ppl_delta_pct"), "min", lambda v: f"{v:+.2f}%"
        ),
        Metric(
            "Quality",
            "Next-token agreement",
            _details("next_token_agreement"),
            "max",
            lambda v: f"{100 * v:.1f}%",
        ),
        Metric(
            "Speed",
            "Decode tokens/s (median)",
            _llm("decode_tok_s"),
            "max",
            lambda v: f"{v:,.1f}",
            _decode_spread,
            _ROUNDS,
        ),
        Metric(
            "Speed",
            "Decode vs original",
            _details("decode_ratio"),
            "max",
            lambda v: f"{v:.2f}×",
            _ratio_spread,
            _ROUNDS,
        ),
        # Medians without a recorded spread: shown, never marked best.
        Metric("Speed", "Prefill", _llm("prefill_ms"), None, lambda v: f"{v:.1f} ms"),
        Metric("Speed", "Time to first token", _llm("ttft_ms"), None, lambda v: f"{v:.1f} ms"),
        Metric(
            "Memory", "Peak resident memory", _llm("peak_rss_mb"), "min", lambda v: f"{v:.0f} MB"
        ),
    ]
