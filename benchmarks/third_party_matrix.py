"""`python -m benchmarks.third_party_matrix`: every preset on every third-party-shaped model.

The models are the ones tests/third_party_models.py builds (a classifier with small feature
maps, squeeze-excite and grouped convs, dynamic and fixed-shape; a CNN+GRU recogniser; a
dense-map detector; a stateful streaming model; a TorchScript module with an `int` argument,
converted through the engine's ingest path first). Each (model, preset) cell runs
`compress()` with the preset's recipe as a user gets it (the model's dataset where the preset
needs data, or always with --always-data) and records:

- status: ok, not recommended (below the quality floor), refused (an EngineError: its
  message, and after how many seconds), error (any other exception: the traceback head) or
  crash (each cell runs in its own process: a native crash or a hang ends only that cell);
- size ratio, speed-up (original p50 / result p50) with the report's noise band and verdict,
  and which input shape was timed;
- the task-aware agreement of every output (top-1, per-step argmax, map IoU, ...; cosine in
  reports that have nothing else), its worst sample, and the share of broken samples;
- the TFLite files and the route that made each, and whether the input files were modified.

Prints a Markdown table and writes `benchmarks/results/third_party.json` (`{"rows", "meta"}`);
scratch (models, datasets, every run's output folder) goes to `benchmarks/.cache/third_party/`
and is kept. Run by hand, not in CI: the pruning presets train for up to 30 epochs per model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache" / "third_party"
RESULTS = ROOT / "results"
TESTS = ROOT.parent / "tests"
SAMPLES = 256  # dataset samples per model: half calibrate/train, half evaluate
DIGITS = 900  # the classifier's: digits it was not trained on (pruning presets train on half)
_FRAME = re.compile(r'\s*File "(.+)", line (\d+) in (\S+)')


@dataclass(frozen=True)
class MatrixModel:
    """One model of the matrix: how to build it and its dataset (None: random inputs only)."""

    name: str
    what: str
    build: Callable[[Path], Path]
    dataset: Callable[[Path], Path] | None


def models() -> list[MatrixModel]:
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import third_party_models as tpm

    return [
        MatrixModel(
            "se-classifier",
            "SE + grouped/depthwise CNN, 8x8 digits, opset 12, dynamic batch/H/W",
            tpm.se_grouped_classifier,
            lambda d: tpm.digits_npz(d / "digits.npz", DIGITS),
        ),
        MatrixModel(
            "se-classifier-fixed",
            "the same classifier exported with every dim fixed ([1, 1, 8, 8])",
            lambda d: tpm.se_grouped_classifier(d, dynamic=False),
            lambda d: tpm.digits_npz(d / "digits.npz", DIGITS),
        ),
        MatrixModel(
            "crnn",
            "conv stack + GRU, log-softmax [N, W/2, 11], opset 12, dynamic batch/width",
            tpm.cnn_sequence_model,
            lambda d: tpm.digit_strips_npz(d / "strips.npz", SAMPLES),
        ),
        MatrixModel(
            "detector",
            "fully convolutional, sigmoid map [N, 1, H/4, W/4], opset 11, dynamic H/W",
            tpm.dense_map_detector,
            lambda d: tpm.blobs_npz(d / "blobs.npz", SAMPLES),
        ),
        MatrixModel(
            "streaming",
            "input [batch, 512], state [2, batch, 128], scalar int64 sr; opset 12",
            tpm.stateful_streaming_model,
            lambda d: tpm.streaming_npz(d / "streaming.npz", SAMPLES),
        ),
        MatrixModel(
            "torchscript-sr",
            "TorchScript forward(x: Tensor, sr: int), converted by the ingest path",
            _converted_torchscript(tpm.torchscript_with_int_arg),
            _torchscript_dataset,
        ),
    ]


class ConversionRefused(Exception):
    """The ingest path refused the model: every preset's cell says so."""


def _converted_torchscript(build: Callable[[Path], Path]) -> Callable[[Path], Path]:
    def convert(folder: Path) -> Path:
        from compress_engine.errors import EngineError
        from compress_engine.ingest import ModelFormat, convert_to_onnx, parse_input_shapes

        source = build(folder)
        try:
            result = convert_to_onnx(
                source,
                ModelFormat.TORCHSCRIPT,
                folder / "converted",
                input_shapes=parse_input_shapes("x: 1x512; sr: 16000"),
                timeout_s=600,
            )
        except EngineError as exc:
            raise ConversionRefused(f"conversion refused: {exc}") from None
        return result.model

    return convert


def _torchscript_dataset(folder: Path) -> Path:
    """Frames for `x` and, if the converted model kept `sr` as an input, its constant."""
    from compress_engine.inspect import inspect_onnx

    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {}
    for t in inspect_onnx(folder / "converted" / "model.onnx").inputs:
        if np.dtype(t.dtype).kind in "iu":
            arrays[t.name] = np.array(16000, dtype=t.dtype)  # 0-d: a constant
        else:
            arrays[t.name] = (0.1 * rng.standard_normal((SAMPLES, 512))).astype(t.dtype)
    path = folder / "frames.npz"
    np.savez(path, **arrays)
    return path


# --- one cell ------------------------------------------------------------------------------


# Rows beside the presets: TFLite export of a model without the pruning of the mobile preset
# (which refuses models the torch side cannot rebuild, so their TFLite path is never reached).
EXTRA_RECIPES: dict[str, dict[str, Any]] = {
    "static-int8+tflite": {
        "steps": [{"quantize": {"mode": "static-int8", "per_channel": True}}],
        "export": ["onnx", "tflite"],
        "tflite": {"precisions": ["fp32", "int8"]},
    },
}


def recipe_for(name: str) -> Any:
    from compress_engine.presets import get_preset

    return EXTRA_RECIPES[name] if name in EXTRA_RECIPES else get_preset(name).recipe()


def needs_data(name: str) -> bool:
    from compress_engine.presets import PRESETS

    return name in EXTRA_RECIPES or PRESETS[name].needs_data


def run_cell(model: Path, data: Path | None, preset: str, out: Path) -> dict[str, Any]:
    """compress() with `preset` on `model`; the row's figures, or why there are none."""
    from compress_engine import compress
    from compress_engine.errors import EngineError

    inputs = [p for p in (model, data) if p is not None]
    before = {str(p): _sha256(p) for p in inputs}
    start = time.perf_counter()
    row: dict[str, Any] = {"preset": preset}
    try:
        report = compress(model, recipe_for(preset), data, out_dir=out)
    except EngineError as exc:
        row.update(status="refused", message=str(exc))
    except Exception as exc:
        row.update(status="error", message=_traceback_head(exc))
    else:
        row.update(_figures(report))
    row["wall_s"] = round(time.perf_counter() - start, 1)
    changed = [Path(p).name for p, h in before.items() if _sha256(Path(p)) != h]
    row["inputs_modified"] = changed
    return row


def _figures(report: Any) -> dict[str, Any]:
    """What the report says, read defensively (fields land as the issue is worked on)."""
    recommended = getattr(report, "recommended", True)
    first_batch = str(report.original.latency.batch_size)
    band = (getattr(report, "latency_noise_by_batch", None) or {}).get(first_batch)
    verdict = None
    with contextlib.suppress(Exception):
        verdict = report.speed_verdict()
    row: dict[str, Any] = {
        "status": "ok" if recommended else "not recommended",
        "message": "; ".join(getattr(report, "quality_reasons", []) or []),
        "size_ratio": _round(report.size_ratio, 3),
        "speedup": _round(_speedup(report), 3),
        "noise": _round(band.noise, 3) if band is not None else None,
        "noise_band": [_round(band.low, 3), _round(band.high, 3)] if band is not None else None,
        "speed_verdict": verdict,
        "timed_shapes": dict(report.input_shapes),
        "timed_shape_sources": dict(getattr(report, "input_shape_sources", {}) or {}),
        "fidelity_inputs": report.fidelity.inputs,
        "outputs": [_output(o) for o in report.fidelity.per_output],
        "accuracy_drop_points": (
            _round(report.accuracy.drop_points, 2) if report.accuracy is not None else None
        ),
        "artifacts": [_artifact(a) for a in report.artifacts],
        "notes": list(report.notes),
    }
    return row


def _speedup(report: Any) -> float | None:
    with contextlib.suppress(Exception):
        return report.speedup()
    ratio = report.latency_ratio
    return 1 / ratio if ratio else None


def _output(o: Any) -> dict[str, Any]:
    metric = getattr(o, "metric", None)
    agreement = getattr(o, "agreement", None)
    if agreement is None:  # reports without task-aware agreement: top-1, else cosine
        metric, agreement = (
            ("top1_agreement", o.top1_agreement)
            if o.top1_agreement is not None
            else ("cosine", o.cosine_similarity)
        )
    spread = getattr(o, "per_sample", None)
    return {
        "name": o.name,
        "kind": getattr(o, "kind", None),
        "metric": metric,
        "agreement": _round(agreement, 4),
        "cosine": _round(o.cosine_similarity, 4),
        "worst_sample": _round(spread.worst, 4) if spread is not None else None,
        "broken_share": _round(spread.below_floor, 4) if spread is not None else None,
        "sample_score": spread.score if spread is not None else None,
    }


def _artifact(a: Any) -> dict[str, Any]:
    return {
        "name": a.name,
        "format": a.format,
        "precision": a.precision,
        "status": a.status,
        "failure": a.failure,
        "source": getattr(a, "source", None),
        "converter": getattr(a, "converter", None),  # TFLite: the route that made it
        "size_bytes": a.size_bytes,
    }


def _traceback_head(exc: BaseException, frames: int = 3) -> str:
    """The exception and the innermost frames: enough to find the bug, short enough to read."""
    tb = traceback.extract_tb(exc.__traceback__)[-frames:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(tb))
    return f"{type(exc).__name__}: {str(exc)[:400]} [at {where}]"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


# --- the matrix ----------------------------------------------------------------------------


def run_matrix(
    wanted_models: list[str] | None,
    presets: list[str],
    *,
    always_data: bool,
    timeout_s: float = 1800,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for m in models():
        if wanted_models and m.name not in wanted_models:
            continue
        folder = CACHE / m.name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            model = m.build(folder)
            data = m.dataset(folder) if m.dataset is not None else None
        except ConversionRefused as exc:
            rows += [
                {"model": m.name, "preset": p, "status": "refused", "message": str(exc)}
                for p in presets
            ]
            continue
        for preset in presets:
            feed = data if (always_data or needs_data(preset)) else None
            _log(f"{m.name} / {preset} ...")
            row = _isolated_cell(model, feed, preset, folder / f"out-{preset}", timeout_s)
            rows.append({"model": m.name, **row})
            _log(f"  {row['status']} in {row['wall_s']} s {_short(row.get('message', ''))}")
    return rows


def _isolated_cell(
    model: Path, data: Path | None, preset: str, out: Path, timeout_s: float
) -> dict[str, Any]:
    """run_cell in a child process: a crash of a native library (a segfault in ONNX Runtime)
    or a hang becomes this cell's row instead of ending the matrix."""
    out.mkdir(parents=True, exist_ok=True)
    row_file = out.parent / f"row-{preset}.json"
    row_file.unlink(missing_ok=True)
    spec = {"model": str(model), "data": str(data) if data else None, "preset": preset}
    spec |= {"out": str(out), "row": str(row_file)}
    cmd = [sys.executable, "-m", "benchmarks.third_party_matrix", "--cell", json.dumps(spec)]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT.parent, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"preset": preset, "status": "crash", "message": f"no result in {timeout_s:g} s"}
    if row_file.is_file():
        return json.loads(row_file.read_text(encoding="utf-8"))
    died = f"signal {-done.returncode}" if done.returncode < 0 else f"exit {done.returncode}"
    lines = done.stderr.strip().splitlines()
    # faulthandler's stack (innermost first) says where a native crash happened.
    frames = [
        f"{Path(m[1]).name}:{m[2]} {m[3]}" for m in map(_FRAME.match, lines) if m is not None
    ][:3]
    where = " <- ".join(frames) or " ".join(lines[-3:])
    return {
        "preset": preset,
        "status": "crash",
        "message": f"the process died ({died}) at {_short(where, 400)}",
        "wall_s": round(time.perf_counter() - start, 1),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | preset | status | size | speed-up (noise) | agreement (worst sample) | "
        "message / files |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['preset']} | {r['status']} | {_x(r.get('size_ratio'))} | "
            f"{_speed(r)} | {_agreements(r)} | {_cell_message(r)} |"
        )
    return "\n".join(lines)


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _speed(r: dict[str, Any]) -> str:
    if r.get("speedup") is None:
        return "–"
    text = f"{r['speedup']:.2f}×"
    if r.get("noise") is not None:
        text += f" ±{r['noise']:.0%}"
    if r.get("speed_verdict"):
        text += f" {r['speed_verdict']}"
    sources = set((r.get("timed_shape_sources") or {}).values())
    if "default" in sources:
        text += " (guessed shape)"
    return text


def _agreements(r: dict[str, Any]) -> str:
    parts = []
    for o in r.get("outputs") or []:
        if o["agreement"] is None:
            parts.append(f"{o['name']}: –")
            continue
        text = f"{o['name']}: {o['metric']} {o['agreement']:.3f}"
        if o.get("worst_sample") is not None:
            text += f" ({o['worst_sample']:.2f})"
        parts.append(text)
    return "; ".join(parts) or "–"


def _cell_message(r: dict[str, Any]) -> str:
    parts = []
    if r.get("message"):
        parts.append(_short(r["message"], 160))
    tflite = [a for a in r.get("artifacts") or [] if a["format"] == "tflite"]
    for a in tflite:
        made = f"via {a['converter']}" if a.get("converter") else "ok"
        state = made if a["status"] == "ok" else f"failed: {_short(a.get('failure') or '', 80)}"
        parts.append(f"{a['name']} {state}")
    if r.get("inputs_modified"):
        parts.append(f"MODIFIED INPUTS {r['inputs_modified']}")
    if r.get("wall_s") is not None:
        parts.append(f"{r['wall_s']} s")
    return "; ".join(parts).replace("|", "/").replace("\n", " ")


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def main(argv: list[str] | None = None) -> int:
    from compress_engine.presets import PRESETS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.third_party_matrix")
    parser.add_argument("--models", help="comma-separated subset of the models")
    parser.add_argument("--presets", help="comma-separated subset of the presets")
    parser.add_argument(
        "--always-data",
        action="store_true",
        help="give every preset the model's dataset (default: only presets that need data)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "third_party.json")
    parser.add_argument(
        "--timeout", type=float, default=1800, help="seconds one cell may take (default 1800)"
    )
    parser.add_argument("--cell", help=argparse.SUPPRESS)  # one cell, in a child process
    args = parser.parse_args(argv)
    if args.cell:
        return _cell_main(json.loads(args.cell))
    presets = _subset(parser, args.presets, [*PRESETS, *EXTRA_RECIPES], "presets")
    known = [m.name for m in models()]
    wanted = _subset(parser, args.models, known, "models") if args.models else None
    _quiet()
    start = time.perf_counter()
    load_start = _load()
    rows = run_matrix(wanted, presets, always_data=args.always_data, timeout_s=args.timeout)
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": _device(),
        "python": platform.python_version(),
        "always_data": args.always_data,
        "models": {m.name: m.what for m in models()},
        "load_average": {"start": load_start, "end": _load()},
        "total_wall_s": round(time.perf_counter() - start, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps({"rows": rows, "meta": meta}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(format_table(rows))
    print(f"\nwrote {args.out} in {meta['total_wall_s']} s")
    return 0


def _cell_main(spec: dict[str, Any]) -> int:
    import faulthandler

    faulthandler.enable()
    _quiet()
    data = Path(spec["data"]) if spec["data"] else None
    row = run_cell(Path(spec["model"]), data, spec["preset"], Path(spec["out"]))
    Path(spec["row"]).write_text(json.dumps(row), encoding="utf-8")
    return 0


def _subset(
    parser: argparse.ArgumentParser, text: str | None, known: list[str], what: str
) -> list[str]:
    if not text:
        return known
    wanted = [w.strip() for w in text.split(",") if w.strip()]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        parser.error(f"unknown {what} {unknown}; known: {known}")
    return [k for k in known if k in wanted]


def _device() -> str:
    try:
        from compress_engine.device import describe_device

        return describe_device()
    except Exception:
        return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet() -> None:
    # The quantizer's and exporter's advice would bury the progress lines.
    warnings.filterwarnings("ignore", module=r"(torch|onnxruntime|onnx|onnx2torch)(\.|$)")
    logging.getLogger().setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
