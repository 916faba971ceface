"""The deployment bundle: one .zip with the artifacts, the report, a readable REPORT.md, the
input preprocessing and a runnable inference example.

Written as a stream (`iter_bundle` yields bytes as it goes), so the web app can serve it
without building the whole file first, and the CLI can write it to disk.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import yaml

from compress_engine.formatting import human_bytes as _bytes
from compress_engine.report import Report

CHUNK = 1 << 20
EXAMPLE_ONNX = "examples/run_onnx.py"


def iter_bundle(
    report: Report, artifacts: Sequence[tuple[str, Callable[[], IO[bytes]]]]
) -> Iterator[bytes]:
    """Zip bytes of the bundle. `artifacts`: (name, opener) per artifact file, stored under
    models/; everything else is generated from the report."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, opener in artifacts:
            with opener() as src, zf.open(f"models/{name}", "w", force_zip64=True) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    yield from sink.drain()
        for name, text in bundle_texts(report).items():
            zf.writestr(name, text)
            yield from sink.drain()
    yield from sink.drain()


def write_bundle(target: IO[bytes], report: Report, artifacts: Sequence[tuple[str, Any]]) -> None:
    for chunk in iter_bundle(report, artifacts):
        target.write(chunk)


def bundle_texts(report: Report) -> dict[str, str]:
    """The generated members, by path inside the bundle."""
    return {
        "README.md": _readme(report),
        "REPORT.md": report_markdown(report),
        "report.json": report.model_dump_json(indent=2),
        "recipe.yaml": yaml.safe_dump(report.recipe, sort_keys=False),
        "preprocessing.json": json.dumps(preprocessing(report), indent=2),
        EXAMPLE_ONNX: _EXAMPLE_ONNX,
    }


def main_onnx(report: Report) -> str | None:
    """Name of the main ONNX artifact (the compressed model)."""
    return next((a.name for a in report.artifacts if a.format == "onnx"), None)


def preprocessing(report: Report) -> dict[str, Any]:
    """What callers must feed: names, dtypes, shapes measured with, layout, normalisation."""
    ev = report.recipe.get("evaluate", {})
    data = report.data
    return {
        "model": f"models/{main_onnx(report)}",
        "inputs": [
            {
                "name": t.name,
                "dtype": t.dtype,
                "shape": t.shape,
                "measured_shape": report.input_shapes.get(t.name),
                "layout": "NCHW" if len(t.shape) == 4 else None,
            }
            for t in report.inputs
        ],
        "outputs": [{"name": t.name, "dtype": t.dtype, "shape": t.shape} for t in report.outputs],
        "dataset_preprocessing": data.preprocessing if data is not None else None,
        "image_mean": ev.get("image_mean"),
        "image_std": ev.get("image_std"),
        "classes": list(data.classes) if data is not None else [],
        "note": (
            "Feed tensors exactly as the dataset given to the job was laid out; for image-folder "
            "datasets pixels were scaled to [0, 1], then (x - image_mean) / image_std."
        ),
    }


def report_markdown(report: Report) -> str:
    o, r = report.original, report.result
    rows = [
        ("File size", _bytes(o.size_bytes), _bytes(r.size_bytes), _x(report.size_ratio)),
        ("Parameters", f"{o.parameters:,}", f"{r.parameters:,}", _x(report.param_ratio)),
    ]
    for b, lat in o.latency_by_batch.items() or {str(o.latency.batch_size): o.latency}.items():
        got = r.latency_by_batch.get(b, r.latency)
        ratio = got.p50_ms / lat.p50_ms if lat.p50_ms else None
        rows.append(
            (f"Latency p50, batch {b}", f"{lat.p50_ms:.4g} ms", f"{got.p50_ms:.4g} ms", _x(ratio))
        )
    if o.macs and r.macs is not None:
        rows.append(("MACs (batch 1)", f"{o.macs:,}", f"{r.macs:,}", _x(r.macs / o.macs)))
    lines = [
        "# Compression report",
        "",
        f"Produced by compress_engine {report.engine_version} on "
        f"{report.created_at:%Y-%m-%d %H:%M} UTC.",
        f"Device: {report.device}.",
        "",
        "| | original | compressed | ratio |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"Latency: ONNX Runtime {o.latency.provider}, {o.latency.threads} threads, "
        f"{o.latency.runs} timed runs after {o.latency.warmup} warm-up, original and compressed "
        "interleaved on the same inputs.",
    ]
    s = report.fidelity.summary
    lines += [
        "",
        "## Fidelity",
        "",
        f"On {report.fidelity.samples} {report.fidelity.inputs} samples, output `{s.name}`: "
        f"cosine {_num(s.cosine_similarity)}, max abs diff {_num(s.max_abs_diff)}"
        + ("" if s.top1_agreement is None else f", top-1 agreement {s.top1_agreement:.1%}")
        + ".",
    ]
    if report.accuracy is not None:
        a = report.accuracy
        lines += [
            "",
            "## Accuracy",
            "",
            f"Top-1 on {a.samples} labelled evaluation samples: {a.original_top1:.2%} -> "
            f"{a.result_top1:.2%} ({-a.drop_points:+.2f} points).",
        ]
    if report.pruning is not None:
        p = report.pruning
        lines += [
            "",
            "## Pruning",
            "",
            f"{p.method} pruning, importance {p.importance}, amount {p.amount:.2f}: parameters "
            f"{p.parameters_before:,} -> {p.parameters_after:,}, MACs {p.macs_before:,} -> "
            f"{p.macs_after:,}.",
            "",
            "| layer | kind | before | after |",
            "| --- | --- | --- | --- |",
            *(f"| `{x.name}` | {x.kind} | {x.before} | {x.after} |" for x in p.layers),
        ]
    for t in report.training:
        lines += [
            "",
            f"## Training ({t.kind})",
            "",
            f"{t.loss}; on {t.device}; {t.train_samples} training samples, "
            f"{t.validation_samples} held out. Validation {t.metric} {t.before:.4g} -> "
            f"{t.best:.4g} (epoch {t.best_epoch} of {t.epochs_run}).",
            "",
            "| epoch | train loss | validation |",
            "| --- | --- | --- |",
            *(
                f"| {h.epoch} | {'-' if h.train_loss is None else f'{h.train_loss:.4f}'} | "
                f"{h.val_metric:.4g} |"
                for h in t.history
            ),
        ]
    if report.notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in report.notes)]
    lines += [
        "",
        "## Files",
        "",
        "| file | format | precision | size | sha256 |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| models/{a.name} | {a.format} | {a.precision} | {_bytes(a.size_bytes)} | "
            f"`{a.sha256}` |"
            for a in report.artifacts
        ),
        "",
        "## Recipe",
        "",
        "```yaml",
        yaml.safe_dump(report.recipe, sort_keys=False).rstrip(),
        "```",
        "",
        "## Versions",
        "",
        *(f"- {k} {v}" for k, v in sorted(report.versions.items())),
        "",
    ]
    return "\n".join(lines)


def _readme(report: Report) -> str:
    model = main_onnx(report)
    return f"""# ModelPress deployment bundle

- `models/{model}`: the compressed model (ONNX, opset kept from the original).
- `REPORT.md` / `report.json`: what was done and measured (before/after, fidelity, notes).
- `preprocessing.json`: input names, dtypes, shapes, layout and normalisation.
- `{EXAMPLE_ONNX}`: runs the model with ONNX Runtime.

```sh
pip install onnxruntime numpy
python {EXAMPLE_ONNX}                 # random inputs of the measured shapes
python {EXAMPLE_ONNX} --npz data.npz  # arrays named after the inputs (or `x`)
```
"""


_EXAMPLE_ONNX = '''"""Run the bundled ONNX model with ONNX Runtime.

    python examples/run_onnx.py [--npz data.npz] [--model models/NAME.onnx]

Without --npz, inputs are random values of the shapes and dtypes the report was measured
with (preprocessing.json). Prints each output's shape and, for 2-D class scores, the top-1
class per sample.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    spec = json.loads((HERE / "preprocessing.json").read_text())
    parser = argparse.ArgumentParser()
    parser.add_argument("--npz", type=Path, help="arrays named after the inputs, or x")
    parser.add_argument("--model", type=Path, default=HERE / spec["model"])
    args = parser.parse_args()

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {}
    arrays = dict(np.load(args.npz, allow_pickle=False)) if args.npz else {}
    for spec_input in spec["inputs"]:
        name, dtype = spec_input["name"], np.dtype(spec_input["dtype"])
        if name in arrays or (len(spec["inputs"]) == 1 and "x" in arrays):
            feed[name] = arrays.get(name, arrays.get("x")).astype(dtype)
        elif dtype.kind == "f":
            feed[name] = rng.standard_normal(spec_input["measured_shape"]).astype(dtype)
        else:
            feed[name] = rng.integers(0, 100, spec_input["measured_shape"]).astype(dtype)
    outputs = session.run(None, feed)
    for meta, value in zip(session.get_outputs(), outputs):
        print(f"{meta.name}: shape {list(value.shape)}")
        if value.ndim == 2 and value.shape[1] > 1:
            print(f"  top-1 per sample: {value.argmax(axis=1).tolist()}")


if __name__ == "__main__":
    main()
'''


class _Sink:
    """A write-only, tell-able buffer: zipfile writes into it, iter_bundle drains it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        if self._parts:
            out = b"".join(self._parts)
            self._parts.clear()
            yield out


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3f}x"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.6g}"
