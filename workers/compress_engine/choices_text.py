"""The quantize step's choices in words: REPORT.md's "Quantization choices" section, one row
per option the engine decided (int8 format, smoothing, bias correction...) and one per build
it measured to decide.

Kept apart from bundle.py so each stays small; reads only the Report.
"""

from __future__ import annotations

from compress_engine.formatting import human_bytes
from compress_engine.report import Report


def choices_markdown(report: Report) -> list[str]:
    """The section's lines (each starting a new paragraph), [] when nothing was chosen."""
    choices = report.quantization.choices if report.quantization is not None else []
    if not choices:
        return []
    lines = [
        "",
        "## Quantization choices",
        "",
        "| option | chosen | why |",
        "| --- | --- | --- |",
        *(f"| `{c.option}` | {c.chosen} | {_cell(c.reason)} |" for c in choices),
    ]
    trials = [(c.option, t) for c in choices for t in c.trials]
    if trials:
        timed = any(t.p50_ms is not None for _, t in trials)
        lines += [
            "",
            "Builds measured to decide (mean cosine to float32 on held-out calibration samples"
            + (", p50 timed interleaved" if timed else "")
            + "):",
            "",
            "| option | build | cosine | " + ("p50 | " if timed else "") + "size |",
            "| --- | --- | --- | " + ("--- | " if timed else "") + "--- |",
        ]
        for option, t in trials:
            cosine = "-" if t.fidelity is None else f"{t.fidelity:.5f}"
            p50 = ("-" if t.p50_ms is None else f"{t.p50_ms:.4g} ms") + " | " if timed else ""
            size = "-" if t.size_bytes is None else human_bytes(t.size_bytes)
            lines.append(f"| `{option}` | {_cell(t.label)} | {cosine} | {p50}{size} |")
    return lines


def _cell(text: str) -> str:
    """Free text on one line, safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")
