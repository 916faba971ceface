"""Targets that compare rows with each other rather than with a fixed number: ours against the
peers measured in the same run, `auto`/`accuracy-aware` never slower than the original, and
`auto` on the Pareto front of its model's rows.

Reported in `meta.relative_targets` beside the fixed TARGETS; nothing is tuned to them.
"""

from __future__ import annotations

from typing import Any

# (model, our variant(s) - the best of them counts, metric, peer variant, how to compare).
# "at least": ours >= peer; "within 5%": ours >= 0.95 x peer (latency ratios).
VERSUS_PEERS: list[tuple[str, tuple[str, ...], str, str, str]] = [
    ("efficientnet-lite0", ("static-int8",), "top1_agreement", "nncf-default", "at least"),
    ("efficientnet-lite0", ("static-int8",), "latency.1.ratio", "nncf-default", "within 5%"),
    ("efficientnet-lite0", ("static-int8",), "top1_agreement", "ort-default-static", "better"),
    (
        "nudenet-320n",
        ("static-int8", "auto"),
        "detection_agreement",
        "nncf-default",
        "at least",
    ),
    ("minilm-l6", ("dynamic-int8",), "fidelity_cosine", "nncf-default", "at least"),
]
# Rows that choose by measuring must never hand back something slower than the original.
NEVER_SLOWER = ("auto", "accuracy-aware")
NEVER_SLOWER_RATIO = 0.95
# Pareto axes: smaller file, higher agreement, faster at batch 1.
PARETO_OF = {"efficientnet-lite0": "auto"}


def lookup(row: dict[str, Any] | None, key: str) -> Any:
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _row(rows: list[dict[str, Any]], model: str, variant: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["model"] == model and r["variant"] == variant and not r.get("error")),
        None,
    )


def _agreement(row: dict[str, Any]) -> float | None:
    for key in ("detection_agreement", "top1_agreement", "nn_agreement", "fidelity_cosine"):
        if row.get(key) is not None:
            return float(row[key])
    return None


def versus_peers(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for model, ours, metric, peer, how in VERSUS_PEERS:
        candidates = [(v, lookup(_row(rows, model, v), metric)) for v in ours]
        candidates = [(v, x) for v, x in candidates if isinstance(x, int | float)]
        peer_value = lookup(_row(rows, model, peer), metric)
        reached = None
        best = max(candidates, key=lambda c: c[1], default=None)
        if best is not None and isinstance(peer_value, int | float):
            if how == "at least":
                reached = best[1] >= peer_value
            elif how == "better":
                reached = best[1] > peer_value
            else:
                reached = best[1] >= 0.95 * peer_value
        out.append(
            {
                "model": model,
                "variant": best[0] if best else "/".join(ours),
                "metric": metric,
                "target": f"{how} {peer}",
                "value": None if best is None else best[1],
                "peer_value": peer_value,
                "reached": reached,
            }
        )
    return out


def never_slower(rows: list[dict[str, Any]], spread: dict[str, dict[str, float]]) -> list[dict]:
    """auto/accuracy-aware rows at batch 1: at most 5% slower than the original (the engine's
    own MIN_GAIN), whatever the run's noise; the original's own p50 spread between loops is
    recorded beside it so a near-miss can be read against it."""
    out = []
    for row in rows:
        if row["variant"] not in NEVER_SLOWER or row.get("error"):
            continue
        ratio = lookup(row, "latency.1.ratio")
        noise = spread.get(row["model"], {}).get("1")
        out.append(
            {
                "model": row["model"],
                "variant": row["variant"],
                "metric": "latency.1.ratio",
                "target": f">= {NEVER_SLOWER_RATIO}",
                "value": ratio,
                "peer_value": None,
                "original_p50_spread": noise,
                "reached": None if ratio is None else ratio >= NEVER_SLOWER_RATIO,
            }
        )
    return out


def on_pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Whether the row is dominated by another row of its model on (size ratio, agreement,
    batch-1 speed): another row at least as good on all three and better on one. A row of the
    same file (same bytes and outputs) is the same point, not a rival."""
    out = []
    for model, variant in PARETO_OF.items():
        mine = _row(rows, model, variant)
        reached = None
        beaten_by: list[str] = []
        if mine is not None:
            point = _point(mine)
            for other in rows:
                if other["model"] != model or other is mine or other.get("error"):
                    continue
                theirs = _point(other)
                if None in point or None in theirs or _same_model(mine, other):
                    continue
                if all(t >= p for t, p in zip(theirs, point, strict=True)) and theirs != point:
                    beaten_by.append(other["variant"])
            reached = None if None in point else not beaten_by
        out.append(
            {
                "model": model,
                "variant": variant,
                "metric": "pareto (size, agreement, batch-1 speed)",
                "target": "not dominated by another row of the model",
                "value": ", ".join(beaten_by) or None,
                "peer_value": None,
                "reached": reached,
            }
        )
    return out


def _same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two rows of one file (auto handing back what static-int8 builds, byte for byte): one
    point, whatever their separate timing loops measured."""
    keys = ("size_bytes", "fidelity_cosine", "fidelity_cosine_min", "max_abs_error")
    return all(a.get(k) == b.get(k) for k in keys)


def _point(row: dict[str, Any]) -> tuple[float | None, ...]:
    size = row.get("size_ratio")
    speed = lookup(row, "latency.1.ratio")
    return (
        None if size is None else -float(size),
        _agreement(row),
        None if speed is None else float(speed),
    )


def relative_targets(
    rows: list[dict[str, Any]], spread: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    return [*versus_peers(rows), *never_slower(rows, spread), *on_pareto_front(rows)]


def format_relative(targets: list[dict[str, Any]]) -> str:
    lines = ["", "against the peers and the original:"]
    for t in targets:
        state = {True: "reached", False: "MISSED", None: "n/a (no row)"}[t["reached"]]
        value = t["value"] if isinstance(t["value"], str) else _fmt(t["value"])
        peer = "" if t["peer_value"] is None else f" (peer {_fmt(t['peer_value'])})"
        lines.append(
            f"  {t['model']:<18} {t['variant']:<15} {t['metric']:<22} {t['target']:<28} "
            f"{value:>8}{peer}  {state}"
        )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"
