"""A language-model job's results as the results page shows them: the figures table (size,
perplexity, decode speed with its spread, prefill, time to first token, memory, next-token
agreement), the per-layer precision in counts, the auto search's plans, the answers side by
side and the speed verdict. Every figure is read from the report's `llm` section (the
engine's LlmDetails), never recomputed from anything else.

A result that decodes slower than the original beyond the spread of its rounds is said to be
slower, loudly: it is never presented as a win, whatever its size.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from django.template.defaultfilters import filesizeformat

from compress_engine import llm_method_text
from jobs.presenters import ComparisonRow

Speed = Literal["faster", "slower", "unchanged"]


@dataclass(frozen=True)
class LayerGroup:
    """How many weight matrices of one role were stored at each precision."""

    role: str
    int4: int
    int8: int
    float: int


@dataclass(frozen=True)
class LlmSection:
    details: Any  # compress_engine LlmDetails
    rows: list[ComparisonRow]
    method: str  # the quantization in words
    speed: Speed  # beyond the spread of the decode rounds, or "unchanged" within it
    speed_text: str
    groups: list[LayerGroup]
    budget_text: str  # the perplexity budget and whether it was met; "" without one


def speed_verdict(details: Any) -> Speed:
    """Faster or slower only when the two models' decode rounds do not overlap."""
    if details.slower:
        return "slower"
    if details.result.decode_tok_s_low > details.original.decode_tok_s_high:
        return "faster"
    return "unchanged"


def _speed_text(details: Any, speed: Speed) -> str:
    ratio = details.decode_ratio
    if speed == "faster":
        return f"{ratio:.2f}× faster decode"
    if speed == "slower":
        return f"{ratio:.2f}×: slower than the original"
    return f"{ratio:.2f}×: no measurable change (the rounds overlap)"


def _tok_s(fig: Any) -> str:
    return f"{fig.decode_tok_s:.1f} ({fig.decode_tok_s_low:.1f}–{fig.decode_tok_s_high:.1f})"


def _rss(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} MB"


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def _times(before: float, after: float) -> str:
    """A duration's change: "2.10× faster" (or slower), from before / after."""
    if not before or not after:
        return "–"
    ratio = before / after
    return f"{ratio:.2f}× faster" if ratio >= 1 else f"{1 / ratio:.2f}× slower"


def _perplexity_better(details: Any) -> bool | None:
    budget = details.max_perplexity_increase
    if details.ppl_delta_pct < 0:
        return True
    if budget is not None and details.ppl_delta_pct > budget:
        return False
    return None


def figure_rows(details: Any, speed: Speed) -> list[ComparisonRow]:
    o, r = details.original, details.result
    rows = [
        ComparisonRow(
            "Size (model and data files)",
            filesizeformat(o.size_bytes),
            filesizeformat(r.size_bytes),
            f"{r.size_bytes / o.size_bytes:.3f}×" if o.size_bytes else "–",
            r.size_bytes < o.size_bytes,
        ),
        ComparisonRow(
            "Perplexity",
            f"{o.perplexity:.3f}",
            f"{r.perplexity:.3f}",
            f"{details.ppl_delta_pct:+.2f}%",
            _perplexity_better(details),
        ),
        ComparisonRow(
            "Decode tokens/s (median, slowest–fastest round)",
            _tok_s(o),
            _tok_s(r),
            _speed_text(details, speed),
            {"faster": True, "slower": False, "unchanged": None}[speed],
        ),
        ComparisonRow(
            f"Prefill, {details.window_tokens} tokens",
            _ms(o.prefill_ms),
            _ms(r.prefill_ms),
            _times(o.prefill_ms, r.prefill_ms),
            None,
        ),
        ComparisonRow(
            "Time to first token",
            _ms(o.ttft_ms),
            _ms(r.ttft_ms),
            _times(o.ttft_ms, r.ttft_ms),
            None,
        ),
        _memory_row(o.peak_rss_mb, r.peak_rss_mb),
        ComparisonRow(
            "Next-token agreement",
            "",
            f"{100 * details.next_token_agreement:.1f}%",
            "same next token as the original",
            None,
        ),
    ]
    return rows


def _memory_row(before: float | None, after: float | None) -> ComparisonRow:
    # Measured in a child process per model; None when evaluate.llm.measure_memory was off.
    both = bool(before and after)
    return ComparisonRow(
        "Peak resident memory (a process generating)",
        _rss(before),
        _rss(after),
        f"{after / before:.2f}×" if both else "",  # type: ignore[operator]
        (after < before) if both else None,  # type: ignore[operator]
    )


def layer_groups(details: Any) -> list[LayerGroup]:
    """Per role (embedding, attention, mlp, lm_head, ...), in the order roles first appear."""
    counts: dict[str, Counter[int | None]] = {}
    for layer in details.layers:
        counts.setdefault(layer.role, Counter())[layer.bits] += 1
    return [LayerGroup(role, c[4], c[8], c[None]) for role, c in counts.items()]


def _budget_text(details: Any) -> str:
    budget = details.max_perplexity_increase
    if budget is None:
        return ""
    met = "within" if details.ppl_delta_pct <= budget else "over"
    return f"perplexity {details.ppl_delta_pct:+.2f}%, {met} the {budget:g}% budget"


def llm_section(report: Any) -> LlmSection | None:
    """None for a report without a language-model section."""
    details = report.llm
    if details is None:
        return None
    speed = speed_verdict(details)
    return LlmSection(
        details=details,
        rows=figure_rows(details, speed),
        method=llm_method_text(details),
        speed=speed,
        speed_text=_speed_text(details, speed),
        groups=layer_groups(details),
        budget_text=_budget_text(details),
    )
