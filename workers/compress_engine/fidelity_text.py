"""The fidelity figures and the quality verdict in words: REPORT.md's sections and the
CLI's lines. The results page shows the same fields of the same Report."""

from __future__ import annotations

from compress_engine.report import OutputFidelity, Report


def verdict_markdown(report: Report) -> list[str]:
    """A loud block right under the title when the result is below the quality floor."""
    if report.recommended:
        return []
    return [
        "> **Not recommended:** this result is below the quality floor "
        f"({report.quality_floor or 'evaluate.quality_floor'}). It is offered for download "
        "so you can inspect it, not as a good result.",
        ">",
        *(f"> - {reason}" for reason in report.quality_reasons),
        "",
    ]


def fidelity_markdown(report: Report) -> list[str]:
    """## Fidelity: per output, the metric it is judged by and the per-sample spread."""
    f = report.fidelity
    lines = [
        "",
        "## Fidelity",
        "",
        f"Compressed vs original on {f.samples} {f.inputs} samples. Each output is judged by "
        "the agreement that suits what it looks like; every sample also gets its own score, "
        "and the spread shows whether a few samples broke while the average looks fine.",
        "",
        "| output | judged as | agreement | per-sample score: mean / worst / below floor | "
        "cosine | relative L2 | max abs diff (of range) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *(_markdown_row(o) for o in f.per_output),
    ]
    extras = [text for o in f.per_output if (text := _extras(o))]
    if extras:
        lines += ["", *(f"- `{o}`" + text for o, text in extras)]
    if report.quality_floor:
        verdict = "met" if report.recommended else "**not met**"
        lines += ["", f"Quality floor ({report.quality_floor}): {verdict}."]
    return lines


def _markdown_row(o: OutputFidelity) -> str:
    return (
        f"| `{o.name}` | {o.kind} | {_agreement(o)} | {_spread(o)} | {_num(o.cosine_similarity)} "
        f"| {_num(o.relative_l2)} | {_num(o.max_abs_diff)} ({_share(o.range_error)}) |"
    )


def _agreement(o: OutputFidelity) -> str:
    if o.agreement is None:
        return f"{o.metric_label}: n/a"
    return f"{o.metric_label} {o.agreement:.1%}"


def _spread(o: OutputFidelity) -> str:
    s = o.per_sample
    if s is None:
        return "-"
    return (
        f"{s.score}: {s.mean:.4f} / {s.worst:.4f} / {s.below_floor:.1%} below {s.floor:g} "
        f"({s.samples} samples)"
    )


def _extras(o: OutputFidelity) -> tuple[str, str] | None:
    parts = []
    if o.top5_agreement is not None:
        parts.append(f"top-5 agreement {o.top5_agreement:.1%} (original top-1 in the top 5)")
    if o.sequence_match is not None:
        parts.append(
            f"whole-sequence match {o.sequence_match:.1%} (argmax per step, repeats merged and "
            "the blank, the class the original predicts most, dropped)"
        )
    if o.map_threshold is not None and o.agreement is None:
        parts.append(f"no cell above {o.map_threshold:g} in either model, so no IoU")
    return (o.name, ": " + "; ".join(parts) + ".") if parts else None


def fidelity_lines(report: Report) -> list[str]:
    """The CLI's fidelity lines: one per output."""
    f = report.fidelity
    source = "random" if f.inputs == "random" else "evaluation-split"
    lines = []
    for o in f.per_output:
        # Outputs judged by cosine already show it as their agreement.
        cosine = "" if o.metric == "cosine" else f", cosine {_num(o.cosine_similarity)}"
        line = (
            f"fidelity ({f.samples} {source} samples, output {o.name!r}, {o.kind}): "
            f"{_agreement(o)}{cosine}, max abs diff {_num(o.max_abs_diff)}"
        )
        if o.sequence_match is not None:
            line += f", whole-sequence match {o.sequence_match:.1%}"
        if o.per_sample is not None:
            s = o.per_sample
            line += (
                f"; per sample ({s.score}) mean {s.mean:.4f}, worst {s.worst:.4f}, "
                f"{s.below_floor:.1%} below {s.floor:g}"
            )
        lines.append(line)
    return lines


def verdict_lines(report: Report) -> list[str]:
    """The CLI's closing lines when the result is below the quality floor."""
    if report.recommended:
        return []
    return [
        "NOT RECOMMENDED: the result is below the quality floor "
        f"({report.quality_floor or 'evaluate.quality_floor'}); the files were written so you "
        "can inspect them:",
        *(f"  - {reason}" for reason in report.quality_reasons),
    ]


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _share(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"
