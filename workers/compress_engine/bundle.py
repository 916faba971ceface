"""The deployment bundle: one .zip with the artifacts, the report, a readable REPORT.md with
charts, the input preprocessing and runnable inference examples (ONNX Runtime, LiteRT).

Written as a stream (`iter_bundle` yields bytes as it goes), so the web app can serve it
without building the whole file first, and the CLI can write it to disk.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import PurePosixPath
from typing import IO, Any

import yaml

from compress_engine.bundle_charts import bundle_charts, charts
from compress_engine.bundle_examples import RUN_ONNX, RUN_TFLITE
from compress_engine.choices_text import choices_markdown
from compress_engine.fidelity_text import fidelity_markdown, verdict_markdown
from compress_engine.formatting import human_bytes as _bytes
from compress_engine.formatting import recipe_and_versions_md
from compress_engine.llm import report_text as llm_text
from compress_engine.report import ArtifactInfo, Report

CHUNK = 1 << 20
EXAMPLE_ONNX = "examples/run_onnx.py"
EXAMPLE_TFLITE = "examples/run_tflite.py"


def iter_bundle(
    report: Report, artifacts: Sequence[tuple[str, Callable[[], IO[bytes]]]]
) -> Iterator[bytes]:
    """Zip bytes of the bundle. `artifacts`: (name, opener) per artifact file (the report's
    `files`), stored under models/; everything else is generated from the report."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        external = {a.name for a in report.files if a.format == "onnx-external"}
        for name, opener in artifacts:
            with opener() as src:
                # An external-data zip is unpacked: the bundle is a zip already.
                members = _zip_members(src) if name in external else [(name, src)]
                for member, stream in members:
                    with zf.open(f"models/{member}", "w", force_zip64=True) as dst:
                        while chunk := stream.read(CHUNK):
                            dst.write(chunk)
                            yield from sink.drain()
        for name, content in {**bundle_texts(report), **bundle_binaries(report)}.items():
            zf.writestr(name, content)
            yield from sink.drain()
    yield from sink.drain()


def _zip_members(src: IO[bytes]) -> Iterator[tuple[str, IO[bytes]]]:
    """Each file of an external-data zip that ModelPress itself packed (pack_zip: flat
    names, checked when the artifact was made), opened in turn."""
    with zipfile.ZipFile(src) as inner:
        for info in inner.infolist():
            if not info.is_dir():
                with inner.open(info) as stream:
                    yield PurePosixPath(info.filename).name, stream


def write_bundle(target: IO[bytes], report: Report, artifacts: Sequence[tuple[str, Any]]) -> None:
    for chunk in iter_bundle(report, artifacts):
        target.write(chunk)


def bundle_texts(report: Report) -> dict[str, str]:
    """The generated text members, by path inside the bundle (a language model's: its README
    and REPORT.md, compress_engine.llm.report_text; its genai zip carries chat.py)."""
    if report.llm is not None:
        return {
            "README.md": llm_text.bundle_readme(report),
            "REPORT.md": llm_text.report_markdown(report),
            "report.json": report.model_dump_json(indent=2),
            "recipe.yaml": yaml.safe_dump(report.recipe, sort_keys=False),
        }
    texts = {
        "README.md": _readme(report),
        "REPORT.md": report_markdown(report),
        "report.json": report.model_dump_json(indent=2),
        "recipe.yaml": yaml.safe_dump(report.recipe, sort_keys=False),
        "preprocessing.json": json.dumps(preprocessing(report), indent=2),
    }
    if main_onnx(report):
        texts[EXAMPLE_ONNX] = RUN_ONNX
    if tflite_model(report):
        texts[EXAMPLE_TFLITE] = RUN_TFLITE
    return texts


def bundle_binaries(report: Report) -> dict[str, bytes]:
    """The generated binary members (the PNG charts REPORT.md shows), by path in the bundle;
    none for a language model, whose REPORT.md is tables."""
    return {} if report.llm is not None else bundle_charts(report)


def main_onnx(report: Report) -> str | None:
    """Name of the main ONNX artifact (the compressed model), if it was produced."""
    return next(
        (a.unpacked_name for a in report.files if a.format in ("onnx", "onnx-external")), None
    )


def tflite_model(report: Report) -> str | None:
    """Name of the first TFLite file produced (the LiteRT example's default), if any."""
    return next((a.name for a in report.files if a.format == "tflite"), None)


def preprocessing(report: Report) -> dict[str, Any]:
    """What callers must feed: names, dtypes, shapes measured with, layout, normalisation, and
    per file the inputs it takes in another layout or dtype."""
    ev = report.recipe.get("evaluate", {})
    data = report.data
    onnx, tflite = main_onnx(report), tflite_model(report)
    return {
        "model": onnx and f"models/{onnx}",
        "tflite_model": tflite and f"models/{tflite}",
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
            "datasets pixels were scaled to [0, 1], then (x - image_mean) / image_std. "
            "`artifacts` lists per file the inputs it takes in another layout (transpose them) "
            "or dtype (int8: quantize with the file's input scale and zero point)."
        ),
        "artifacts": {
            a.unpacked_name: {
                "format": a.format,
                "precision": a.precision,
                "layouts": a.layouts,
                "input_dtypes": a.input_dtypes,
                "input_shapes": a.input_shapes,
            }
            for a in report.files
        },
    }


def report_markdown(report: Report) -> str:
    if report.llm is not None:
        return llm_text.report_markdown(report)
    o, r = report.original, report.result
    rows = [
        ("File size", _bytes(o.size_bytes), _bytes(r.size_bytes), _x(report.size_ratio)),
        ("Parameters", f"{o.parameters:,}", f"{r.parameters:,}", _x(report.param_ratio)),
    ]
    for b, lat in o.latency_by_batch.items() or {str(o.latency.batch_size): o.latency}.items():
        got = r.latency_by_batch.get(b, r.latency)
        ratio = got.p50_ms / lat.p50_ms if lat.p50_ms else None
        speed = f"{_x(ratio)}: {report.speed_text(b)}"
        rows.append(
            (f"Latency p50, batch {b}", f"{lat.p50_ms:.4g} ms", f"{got.p50_ms:.4g} ms", speed)
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
        *verdict_markdown(report),
        "| | original | compressed | ratio |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"Latency: ONNX Runtime {o.latency.provider}, {o.latency.threads} threads, "
        f"{o.latency.runs} timed runs after {o.latency.warmup} warm-up, original and compressed "
        "interleaved on the same inputs with an identical copy of the original, whose spread "
        "is the noise band (a change inside it is not claimed). Timed at "
        f"{report.timed_shapes_text()}.",
    ]
    lines += _runtimes_section(report)
    lines += fidelity_markdown(report)
    if report.accuracy is not None:
        a = report.accuracy
        lines += [
            "",
            "## Accuracy",
            "",
            f"Top-1 on {a.samples} labelled evaluation samples: {a.original_top1:.2%} -> "
            f"{a.result_top1:.2%} ({-a.drop_points:+.2f} points).",
        ]
    lines += choices_markdown(report)
    lines += _gate_section(report)
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
    lines += ["", *_files_section(report), ""]
    if plotted := charts(report):
        lines += ["## Charts", "", *(f"![{c.alt}]({c.path})" for c in plotted), ""]
    lines += [
        *recipe_and_versions_md(report.recipe, report.versions),
    ]
    return "\n".join(lines)


def _gate_section(report: Report) -> list[str]:
    gated = report.quantization.gated if report.quantization is not None else []
    if not gated:
        return []
    return [
        "",
        "## Latency gate",
        "",
        "Each op type timed kept in float against the best build so far (interleaved, with an "
        "identical copy's noise band); kept in float only if quantized it ran slower beyond "
        "the noise and 5%.",
        "",
        "| op type | nodes | quantized p50 / float p50 | noise | in the result | reason |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {g.group} | {len(g.nodes)} | {g.ratio:.2f} | ±{g.noise:.0%} | "
            f"{'float' if g.excluded else 'quantized'} | {_cell(g.reason)} |"
            for g in gated
        ),
    ]


def _runtimes_section(report: Report) -> list[str]:
    if not report.runtimes:
        return []
    lines = [
        "",
        "## Latency by runtime",
        "",
        "| runtime | original p50 | compressed p50 | ratio | |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rt in report.runtimes:
        if rt.status != "ok" or rt.compressed is None:
            lines.append(f"| {rt.runtime} | - | - | - | {rt.status}: {_cell(rt.reason)} |")
            continue
        before = rt.original.p50_ms if rt.original else None
        ratio = rt.compressed.p50_ms / before if before else None
        speed = _x(ratio) if before is None else f"{_x(ratio)}: {rt.speed_text()}"
        lines.append(
            f"| {rt.runtime} | {'-' if before is None else f'{before:.4g} ms'} | "
            f"{rt.compressed.p50_ms:.4g} ms | {speed} | {rt.provider} |"
        )
    return lines


def _files_section(report: Report) -> list[str]:
    lines = [
        "## Files",
        "",
        "| file | format | precision | size | status | runtime | cosine vs original "
        "| max abs diff vs original | conversion max abs diff | latency p50 | sha256 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in report.artifacts:
        c = a.check
        lat = c.latency if c else None
        cells = [
            f"[models/{a.unpacked_name}](models/{a.unpacked_name})" if a.ok else a.name,
            a.format,
            a.precision,
            _bytes(a.size_bytes) if a.ok else "-",
            "ok" if a.ok else f"failed: {_cell(a.failure or 'no reason given')}",
            c.runtime if c else "-",
            _opt(c and c.cosine_similarity),
            _opt(c and c.max_abs_diff),
            _opt(c and c.conversion_max_abs_diff),
            f"{lat.p50_ms:.4g} ms (batch {lat.batch_size})" if lat else "-",
            f"`{a.sha256}`" if a.ok else "-",
        ]
        lines.append(f"| {' | '.join(cells)} |")
    lines += [
        "",
        "Each checked file was run in its own runtime and compared with the original on the same "
        "inputs; conversion max abs diff is a converted file's difference from the ONNX model it "
        "was converted from. Latencies in different runtimes (ONNX Runtime, LiteRT) are separate "
        "measurements: compare them within one runtime.",
    ]
    sources: dict[str, list[str]] = {}
    for a in report.artifacts:
        if a.source:
            by = f" by {a.converter}" if a.converter else ""
            shapes = "; ".join(f"`{k}` {v}" for k, v in a.input_shapes.items())
            takes = f" (takes {shapes})" if shapes else ""
            sources.setdefault(f"{a.source}{by}{takes}", []).append(f"`{a.name}`")
    if sources:
        lines += ["", *(f"{', '.join(n)}: converted from {src}." for src, n in sources.items())]
    if layout := _layout_text(report):
        lines += ["", f"**Layout.** {layout}"]
    if int8 := _int8_text(report):
        lines += ["", f"**int8 inputs.** {int8}"]
    return lines


def _layout_text(report: Report) -> str:
    """How to feed TFLite files that take inputs channel-last, grouped by identical layouts."""
    tflite = [a for a in report.files if a.format == "tflite"]
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for a in tflite:
        if a.layouts:
            groups.setdefault(tuple(sorted(a.layouts.items())), []).append(f"`{a.name}`")
    parts = []
    for layouts, names in groups.items():
        if len(names) == len(tflite) > 1:
            who = "The TFLite files take"
        else:
            who = f"{', '.join(names)} {'take' if len(names) > 1 else 'takes'}"
        for name, layout in layouts:
            # NHWC <- NCHW, NDHWC <- NCDHW: the channel axis moves from 1 to last.
            perm = ", ".join(map(str, (0, *range(2, len(layout)), 1)))
            parts.append(
                f"{who} `{name}` as {layout}: transpose {'NC' + layout[1:-1]} arrays with "
                f"`x.transpose({perm})`."
            )
    if parts:
        parts.append(f"`{EXAMPLE_TFLITE}` does this for you.")
    return " ".join(parts)


def _int8_text(report: Report) -> str:
    takes = [
        f"`{a.name}` takes {_names(k for k, v in a.input_dtypes.items() if v == 'int8')} as int8"
        for a in report.files
        if "int8" in a.input_dtypes.values()
    ]
    if not takes:
        return ""
    return (
        f"{'; '.join(takes)}. Quantize float arrays with each input's scale and zero point "
        "from the interpreter's `get_input_details()[...]['quantization']`: "
        "`q = clip(round(x / scale + zero_point), -128, 127).astype(int8)`; read an int8 output "
        f"back as `(q - zero_point) * scale` with its own scale and zero point. "
        f"`{EXAMPLE_TFLITE}` does both."
    )


def _readme(report: Report) -> str:
    model, tflite = main_onnx(report), tflite_model(report)
    lines = [
        "# ModelPress deployment bundle",
        "",
        *verdict_markdown(report),
        *(f"- `models/{a.unpacked_name}`: {_describe(a, model)}." for a in report.files),
        "- `REPORT.md` / `report.json`: what was done and measured (before/after, fidelity, "
        "charts, notes).",
        "- `preprocessing.json`: input names, dtypes, shapes, layout and normalisation, and per "
        "file the inputs it takes in another layout or dtype.",
    ]
    if model:
        lines.append(f"- `{EXAMPLE_ONNX}`: runs the model with ONNX Runtime.")
    if tflite:
        lines.append(f"- `{EXAMPLE_TFLITE}`: runs a TFLite file with the LiteRT interpreter.")
    if model:
        lines += [
            "",
            "```sh",
            "pip install onnxruntime numpy",
            f"python {EXAMPLE_ONNX}                 # random inputs of the measured shapes",
            f"python {EXAMPLE_ONNX} --npz data.npz  # arrays named after the inputs (or `x`)",
            "```",
        ]
    if tflite:
        lines += [
            "",
            "The TFLite files run with LiteRT. The example takes arrays in the ONNX model's "
            "layout and converts them for the file it runs (channel-last and int8 inputs).",
            "",
            "```sh",
            "pip install ai-edge-litert numpy",
            f"python {EXAMPLE_TFLITE}                 # models/{tflite}, random inputs",
            f"python {EXAMPLE_TFLITE} --npz data.npz --model models/NAME.tflite",
            "```",
        ]
        if layout := _layout_text(report):
            lines += ["", layout]
    if failed := [a for a in report.artifacts if not a.ok]:
        lines += ["", "Not included, the export failed (see REPORT.md):", ""]
        lines += [
            f"- `{a.name}`: {' '.join((a.failure or 'no reason given').split())}" for a in failed
        ]
    return "\n".join(lines) + "\n"


def _describe(a: ArtifactInfo, main: str | None) -> str:
    if a.format == "onnx-external":
        return (
            f"the compressed model (ONNX) with its weights in `{a.unpacked_name}.data` beside "
            "it: a model over 2 GB cannot be one protobuf file. Keep both files in one folder; "
            "ONNX Runtime finds the data file next to the model"
        )
    if a.unpacked_name == main:
        return "the compressed model (ONNX, opset kept from the original)"
    if a.format == "onnx-zip":
        return "the same ONNX model, deflate-compressed or with its external data beside it"
    if a.format == "tflite":
        made = f", converted from {a.source}" if a.source else ""
        by = f" by {a.converter}" if a.converter else ""
        return f"TFLite (LiteRT), {a.precision}{made}{by}"
    return f"ONNX, {a.precision}"


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


def _opt(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def _cell(text: str) -> str:
    """Free text (a failure message) on one line, safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)
