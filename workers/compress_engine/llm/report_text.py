"""A language-model run in words: the figures table and the answers side by side, for the
genai zip's README and the deployment bundle's REPORT.md and README.md (report_markdown,
bundle_readme: compress_engine.bundle hands a language model's report to them)."""

from __future__ import annotations

from collections import Counter

from compress_engine.fidelity_text import verdict_markdown
from compress_engine.formatting import human_bytes, recipe_and_versions_md
from compress_engine.report import Report
from compress_engine.report_llm import LlmDetails


def figures_table(d: LlmDetails) -> list[str]:
    """Markdown rows: original vs compressed, figure by figure."""
    o, r = d.original, d.result

    def rss(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f} MB"

    return [
        "| | original | compressed | change (speeds: compressed / original) |",
        "| --- | --- | --- | --- |",
        f"| size | {o.size_bytes / 1e6:.1f} MB | {r.size_bytes / 1e6:.1f} MB "
        f"| {r.size_bytes / o.size_bytes:.3f}x |",
        f"| perplexity | {o.perplexity:.3f} | {r.perplexity:.3f} | {d.ppl_delta_pct:+.2f}% |",
        f"| decode tokens/s (median, low-high) | {o.decode_tok_s:.1f} "
        f"({o.decode_tok_s_low:.1f}-{o.decode_tok_s_high:.1f}) | {r.decode_tok_s:.1f} "
        f"({r.decode_tok_s_low:.1f}-{r.decode_tok_s_high:.1f}) | {d.decode_ratio:.2f}x |",
        f"| prefill, {d.window_tokens} tokens | {o.prefill_ms:.1f} ms | {r.prefill_ms:.1f} ms "
        f"| {o.prefill_ms / r.prefill_ms:.2f}x |"
        if r.prefill_ms
        else "",
        f"| time to first token | {o.ttft_ms:.1f} ms | {r.ttft_ms:.1f} ms | |",
        f"| peak resident memory | {rss(o.peak_rss_mb)} | {rss(r.peak_rss_mb)} | |",
        f"| next-token agreement | | {d.next_token_agreement:.3f} | |",
    ]


def method_text(d: LlmDetails) -> str:
    eights = sum(1 for layer in d.layers if layer.bits == 8)
    floats = sum(1 for layer in d.layers if layer.bits is None)
    parts = [
        f"int{d.bits} weights ({d.method}, blocks of {d.block_size}, "
        f"{'symmetric' if d.symmetric else 'asymmetric'}) in the {d.form} form"
    ]
    if d.bits == 4 and eights:
        parts.append(f"{eights} matrices at int8")
    if floats:
        parts.append(f"{floats} kept in float")
    return ", ".join(parts)


def generations_section(d: LlmDetails) -> list[str]:
    def speed(tok_s: float | None) -> str:
        return "" if tok_s is None else f" ({tok_s:.1f} tokens/s)"

    lines = []
    for g in d.generations:
        lines += [
            f"**Prompt:** {g.prompt}",
            "",
            f"- original{speed(g.original_tok_s)}: {g.original!r}",
            f"- compressed{speed(g.compressed_tok_s)}: {g.compressed!r}",
            "",
        ]
    return lines


def readme(d: LlmDetails) -> str:
    info = d.info
    lines = [
        f"# {info.architecture} language model, compressed by ModelPress",
        "",
        "An onnxruntime-genai folder: `model.onnx` and its data file, `genai_config.json` and "
        "the tokenizer. Run it:",
        "",
        "```",
        "pip install onnxruntime-genai",
        'python chat.py --prompt "What is the capital of France?"',
        "```",
        "",
        f"Weights: {method_text(d)}.",
        "",
        *[row for row in figures_table(d) if row],
        "",
        f"Measured on {d.evaluation_windows} windows of {d.window_tokens} tokens of "
        f"{d.text_data}; decode speed from {d.decode_rounds} interleaved rounds of "
        f"{d.decode_tokens} tokens at batch 1 with {d.threads} threads.",
        "",
        "## Answers side by side (greedy)",
        "",
        *generations_section(d),
    ]
    return "\n".join(lines) + "\n"


# --- the deployment bundle -------------------------------------------------------------------

_FORMATS = {"genai-zip": "onnxruntime-genai folder (zip)"}


def report_markdown(report: Report) -> str:
    """REPORT.md of a language-model job: verdict, figures, layers, search, answers, files."""
    d = report.llm
    assert d is not None, "report_markdown is for a report with an llm section"
    lines = [
        "# Compression report: language model",
        "",
        f"Produced by compress_engine {report.engine_version} on "
        f"{report.created_at:%Y-%m-%d %H:%M} UTC.",
        f"Device: {report.device}.",
        "",
        *verdict_markdown(report),
        *_slower_warning(d),
        f"{d.info.architecture}, {d.info.parameters:,} parameters, {d.info.layers} blocks. "
        f"Weights: {method_text(d)}.",
        "",
        *[row for row in figures_table(d) if row],
        "",
        f"Measured on {d.evaluation_windows} windows of {d.window_tokens} tokens of "
        f"{d.text_data}; decode speed from {d.decode_rounds} interleaved rounds of "
        f"{d.decode_tokens} tokens at batch 1 with {d.threads} threads (median, and the slowest "
        "to fastest round). A speed change is claimed only where the rounds do not overlap.",
        "",
        f"Wanted: {report.quality_floor or 'no budget set'}: "
        + ("met." if report.recommended else "**not met**."),
        *_layers_section(d),
        *_trials_section(d),
        "",
        "## Answers side by side (greedy)",
        "",
        *generations_section(d),
    ]
    if report.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    lines += [
        "## Files",
        "",
        "| file | format | precision | size | checked | sha256 |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| [models/{a.name}](models/{a.name}) | {_FORMATS.get(a.format, a.format)} | "
            f"{a.precision} | {human_bytes(a.size_bytes)} | "
            f"{a.check.runtime + ': loaded and generated' if a.check else '-'} | `{a.sha256}` |"
            for a in report.files
        ),
        "",
        *recipe_and_versions_md(report.recipe, report.versions),
    ]
    return "\n".join(lines)


def _slower_warning(d: LlmDetails) -> list[str]:
    if not d.slower:
        return []
    return [
        f"> **Slower than the original:** {d.result.decode_tok_s:.1f} against "
        f"{d.original.decode_tok_s:.1f} tokens/s ({d.decode_ratio:.2f}x), beyond the spread "
        "of the rounds. Not a speed win, whatever it saves in size.",
        "",
    ]


def _layers_section(d: LlmDetails) -> list[str]:
    if not d.layers:
        return []
    counts: dict[str, Counter[int | None]] = {}
    for layer in d.layers:
        counts.setdefault(layer.role, Counter())[layer.bits] += 1
    return [
        "",
        "## Per-layer precision",
        "",
        "| role | int4 | int8 | float |",
        "| --- | --- | --- | --- |",
        *(f"| {role} | {c[4]} | {c[8]} | {c[None]} |" for role, c in counts.items()),
        "",
        "<details><summary>Every weight matrix</summary>",
        "",
        "| matrix | role | block | stored as |",
        "| --- | --- | --- | --- |",
        *(
            f"| `{x.name}` | {x.role} | {'-' if x.block is None else x.block} | "
            f"{f'int{x.bits}' if x.bits else 'float'} |"
            for x in d.layers
        ),
        "",
        "</details>",
    ]


def _trials_section(d: LlmDetails) -> list[str]:
    if not d.trials:
        return []
    return [
        "",
        "## Auto search",
        "",
        "| plan | size vs original | perplexity | change | within size | within perplexity | |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {t.label} | {t.size_ratio:.3f}x | {t.perplexity:.3f} | {t.ppl_delta_pct:+.2f}% "
            f"| {'yes' if t.within_size else 'no'} | {'yes' if t.meets_budget else 'no'} "
            f"| {'kept' if t.kept else ''} |"
            for t in d.trials
        ),
    ]


def bundle_readme(report: Report) -> str:
    """README.md of a language-model job's bundle."""
    assert report.llm is not None
    names = [a.name for a in report.files]
    lines = [
        "# ModelPress deployment bundle: language model",
        "",
        *verdict_markdown(report),
        *_slower_warning(report.llm),
        *(
            f"- `models/{name}`: the compressed model as an onnxruntime-genai folder, zipped "
            "(model.onnx and its data, genai_config.json, the tokenizer, chat.py, README.md)."
            for name in names
        ),
        "- `REPORT.md` / `report.json`: what was done and measured (perplexity, decode speed, "
        "memory, the answers side by side).",
        "",
        "```sh",
        "pip install onnxruntime-genai",
        *(f"unzip models/{name} -d model" for name in names[:1]),
        'python model/chat.py --prompt "What is the capital of France?"',
        "```",
    ]
    return "\n".join(lines) + "\n"
