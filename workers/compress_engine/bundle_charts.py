"""PNG charts of the deployment bundle: size, latency and accuracy (or cosine) per file.

`charts` decides what to draw from the report alone, so REPORT.md can link the charts without
drawing them; `render` draws one with matplotlib, imported lazily (it is slow to import and
only the bundle needs it).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from compress_engine.formatting import human_bytes
from compress_engine.report import Report

ORIGINAL = "original"
_GREY = "#9e9e9e"
# Other groups get these in order of first appearance: the ONNX model (or ONNX Runtime) comes
# before the TFLite files, so both keep their colours from chart to chart.
_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    text: str  # printed at the end of the bar
    group: str  # colour and legend entry


@dataclass(frozen=True)
class Chart:
    path: str  # inside the bundle
    alt: str  # alt text in REPORT.md
    title: str
    xlabel: str
    bars: tuple[Bar, ...]
    top: float | None = None  # largest possible value (100 %, cosine 1): no ticks beyond it


def charts(report: Report) -> list[Chart]:
    """The charts this report has data for, in REPORT.md order."""
    files = report.files
    # MB on the axis, the readable size at the bar's end.
    sizes = [(f"{ORIGINAL}.onnx", report.original.size_bytes, ORIGINAL)]
    sizes += [(a.name, a.size_bytes, a.format) for a in files]
    bars = tuple(Bar(n, s / 1e6, human_bytes(s), g) for n, s, g in sizes)
    out = [Chart("charts/size.png", "size", "File size", "MB", bars)]

    # Each file is timed on its own runtime: the label says which, since ORT and LiteRT
    # figures are not the same measurement.
    o = report.original.latency
    onnx_runtime = next(
        (a.check.runtime for a in files if a.format == "onnx" and a.check), "ONNX Runtime"
    )
    timed = [(ORIGINAL, onnx_runtime, o.p50_ms, o.batch_size)]
    timed += [
        (a.name, a.check.runtime, a.check.latency.p50_ms, a.check.latency.batch_size)
        for a in files
        if a.check and a.check.latency
    ]
    if len(timed) > 1:
        # One batch size (the usual case) goes in the title, mixed ones at each bar.
        batches = sorted({b for *_, b in timed})
        per_bar = len(batches) > 1
        title = "Latency p50, each file on its own runtime"
        title += "" if per_bar else f", batch {batches[0]}"
        bars = tuple(
            Bar(f"{name} ({rt})", ms, f"{ms:.3g} ms" + (f", batch {b}" if per_bar else ""), rt)
            for name, rt, ms, b in timed
        )
        out.append(Chart("charts/latency.png", "latency", title, "ms", bars))

    acc = report.accuracy
    if acc is not None:
        scored = [(ORIGINAL, acc.original_top1, ORIGINAL)]
        scored += [
            (a.name, a.check.accuracy_top1, a.format)
            for a in files
            if a.check and a.check.accuracy_top1 is not None
        ]
        bars = tuple(Bar(n, v * 100, f"{v:.2%}", g) for n, v, g in scored)
        title = f"Top-1 accuracy, {acc.samples} labelled samples"
        out.append(Chart("charts/accuracy.png", "accuracy", title, "%", bars, top=100))
    else:
        bars = tuple(
            Bar(a.name, a.check.cosine_similarity, f"{a.check.cosine_similarity:.6f}", a.format)
            for a in files
            if a.check and a.check.cosine_similarity is not None
        )
        if bars:
            title = "Cosine similarity to the original's output"
            out.append(Chart("charts/cosine.png", "cosine", title, "cosine", bars, top=1))
    return out


def render(chart: Chart) -> bytes:
    """One horizontal bar chart as PNG bytes (6x3 inches at 100 dpi, no timestamp)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups = list(dict.fromkeys(b.group for b in chart.bars))
    others = [g for g in groups if g != ORIGINAL]
    colour = {g: _COLOURS[i % len(_COLOURS)] for i, g in enumerate(others)} | {ORIGINAL: _GREY}
    fig = Figure(figsize=(6, 3), dpi=100, layout="constrained")
    ax = fig.subplots()
    ys = list(range(len(chart.bars)))
    drawn = ax.barh(ys, [b.value for b in chart.bars], color=[colour[b.group] for b in chart.bars])
    ax.bar_label(drawn, labels=[b.text for b in chart.bars], padding=3, fontsize=7)
    ax.set_yticks(ys, [b.label for b in chart.bars], fontsize=8)
    ax.invert_yaxis()  # first bar (the original) on top
    # Room on the right for the value labels.
    ax.set_xlim(0, (chart.top or max(b.value for b in chart.bars)) * 1.4 or 1)
    if chart.top is not None:
        ax.set_xticks([t for t in ax.get_xticks() if 0 <= t <= chart.top])
    ax.set_title(chart.title, fontsize=9)
    ax.set_xlabel(chart.xlabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    if len(groups) > 1:
        handles = [Patch(color=colour[g], label=g) for g in groups]
        ax.legend(handles=handles, fontsize=7, loc="best")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def bundle_charts(report: Report) -> dict[str, bytes]:
    """PNG bytes by path inside the bundle."""
    return {c.path: render(c) for c in charts(report)}
