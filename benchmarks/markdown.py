"""`python -m benchmarks.markdown [results.json]`: the benchmark results as the Markdown table
the README shows (ours next to the peers, per model), with the targets reached or missed.

The README's table is pasted from this output, never edited by hand, so it always matches a
results file that a run wrote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "quick.json"
# Rows the README shows per model: the peers first, then ours; training and TFLite rows stay
# in the JSON (and the harness's printed table).
PEERS = ("ort-default-dynamic", "ort-default-static", "nncf-default", "nncf-accuracy-control")
OURS = ("dynamic-int8", "static-int8", "fp16", "weight-int4", "auto", "accuracy-aware")


def _num(value: Any, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _agreement(row: dict[str, Any]) -> str:
    """The model's own agreement figure: detections, top-1/top-5, or nearest neighbour."""
    if row.get("detection_agreement") is not None:
        return f"det {row['detection_agreement']:.3f}"
    if row.get("top1_agreement") is not None:
        top5 = row.get("top5_agreement")
        return f"{row['top1_agreement']:.3f}" + ("" if top5 is None else f" / {top5:.3f}")
    if row.get("nn_agreement") is not None:
        return f"nn {row['nn_agreement']:.3f}"
    return "–"


def _ratio(row: dict[str, Any], batch: str) -> str:
    lat = (row.get("latency") or {}).get(batch)
    return "–" if not lat else f"{lat['ratio']:.2f}×"


def table(data: dict[str, Any]) -> str:
    rows = [r for r in data["rows"] if r["variant"] in ("original", *PEERS, *OURS)]
    lines = [
        "| model | variant | size × | agreement (top-1 / top-5) | cosine mean / min "
        "| acc. drop (pt) | batch 1 | large batch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    order = {v: i for i, v in enumerate(("original", *PEERS, *OURS))}
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: order[r["variant"]])
        for r in mine:
            name = r["variant"] if r["variant"] in ("original", *OURS) else f"*{r['variant']}*"
            if r.get("error"):
                lines.append(f"| {model} | {name} | error: {r['error'][:80]} | | | | | |")
                continue
            big = max((b for b in (r.get("latency") or {}) if b != "1"), key=int, default=None)
            lines.append(
                f"| {model} | {name} | {_num(r['size_ratio'], '.3f')} | {_agreement(r)} | "
                f"{_num(r['fidelity_cosine'], '.4f')} / {_num(r['fidelity_cosine_min'], '.4f')} "
                f"| {_num(r['accuracy_drop'], '.2f')} | {_ratio(r, '1')} | "
                f"{'–' if big is None else f'{_ratio(r, big)} (b{big})'} |"
            )
    meta = data.get("meta", {})
    lines.append("")
    lines.append(
        f"*Peers in italics.* {meta.get('device', '?')}, {meta.get('threads', '?')} threads, "
        f"{meta.get('date', '?')}; latency × = original p50 / variant p50, timed interleaved "
        f"(> 1 = faster); whole run {meta.get('total_wall_s', '?')} s."
    )
    return "\n".join(lines)


def targets(data: dict[str, Any]) -> str:
    lines = [
        "| model | variant | metric | target | value | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for t in data.get("meta", {}).get("targets", []):
        state = {True: "met", False: "**missed**", None: "no row"}[t["reached"]]
        value = "–" if t["value"] is None else f"{t['value']:.4g}"
        lines.append(
            f"| {t['model']} | {t['variant']} | {t['metric']} | {t['target']} | {value} | {state} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.markdown", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    data = json.loads(args.results.read_text(encoding="utf-8"))
    print(table(data))
    print()
    print(targets(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
