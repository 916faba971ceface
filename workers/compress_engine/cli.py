"""`modelpress` command line: inspect, compress, print the default recipe, list techniques;
and, against a ModelPress server (compress_engine.remote), login, upload, submit, status,
download."""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from compress_engine import remote
from compress_engine.configs import Recipe, default_recipe
from compress_engine.errors import EngineError
from compress_engine.fidelity_text import fidelity_lines, verdict_lines
from compress_engine.formatting import human_bytes as _bytes
from compress_engine.ingest.formats import require_onnx
from compress_engine.inspect import ModelInfo, TensorInfo, inspect_onnx
from compress_engine.library_logs import LIBRARY_LOGGER
from compress_engine.onnx_files import is_onnx_zip, unpack_zip
from compress_engine.passes import list_passes
from compress_engine.presets import PRESETS, get_preset, with_input_shapes
from compress_engine.report import ArtifactInfo, Report, TrainingPoint

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 ok, 2 a problem the user can fix (EngineError), 1 an internal error."""
    parser = _parser()
    # Everything after `bench` belongs to the suite's own parser (argparse would claim it).
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, a in enumerate(arguments) if not a.startswith("-")), None)
    split = command + 1 if command is not None and arguments[command] == "bench" else None
    args = parser.parse_args(arguments if split is None else arguments[:split])
    if split is not None:
        args.bench_args = arguments[split:]
    try:
        return int(args.func(args))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            raise
        message = " ".join(str(exc).split())[:300] or type(exc).__name__
        print(
            f"internal error ({type(exc).__name__}): {message}\n"
            "This is a bug in ModelPress, not in your input; rerun with --debug for the "
            "traceback and include it in a bug report.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelpress", description="Compress ONNX models and report before/after figures."
    )
    debug_help = "show the traceback of an internal error instead of a one-line message"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Also accepted after the command; SUPPRESS keeps a top-level --debug from being reset.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", parents=[common], help="validate an ONNX file and describe it")
    p.add_argument("model", type=Path, help="path to a .onnx file")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("compress", parents=[common], help="run a recipe on a model")
    p.add_argument(
        "model",
        type=Path,
        help=(
            "a .onnx file (or a .zip of one with its external data); or a language model: a "
            ".gguf file, a .zip of a Hugging Face folder, or an onnxruntime-genai folder "
            "(default recipe: the llm-int4 preset; --data: a .txt or .jsonl text file)"
        ),
    )
    recipe = p.add_mutually_exclusive_group()
    recipe.add_argument(
        "--recipe", type=Path, help="recipe YAML/JSON file (default: dynamic int8 recipe)"
    )
    recipe.add_argument(
        "--preset", help="a named recipe instead of a file (see `modelpress recipes`)"
    )
    p.add_argument(
        "--data",
        type=Path,
        help=(
            "dataset: a .npz (arrays named after the model inputs, or x; optional integer "
            "labels y) or a .zip of images in one folder per class (resized to the model's "
            "input; see evaluate.image_mean/image_std); split into calibration and evaluation"
        ),
    )
    p.add_argument(
        "--out", type=Path, help="output directory (default: <model>.compressed next to it)"
    )
    p.add_argument(
        "--teacher",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a model a distill step may name as its teacher (repeatable); `original` is built in",
    )
    p.add_argument(
        "--bundle",
        action="store_true",
        help="also write bundle.zip: artifacts, report, REPORT.md, preprocessing, an example",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=DIMS",
        help=(
            "the shape to time and measure an input at, e.g. x=1x3x48x320 (repeatable, one per "
            "input; sets evaluate.input_shapes over the recipe's). Without it, free dims take "
            "the dataset's shape, or a guess the report names"
        ),
    )
    p.add_argument(
        "--quiet", "-q", action="store_true", help="no progress lines and no library warnings"
    )
    p.set_defaults(func=_cmd_compress)

    p = sub.add_parser("recipe", parents=[common], help="print the default recipe (YAML)")
    p.add_argument("--schema", action="store_true", help="print the recipe JSON schema instead")
    p.add_argument("--reference", action="store_true", help="print the recipe reference (Markdown)")
    p.set_defaults(func=_cmd_recipe)

    p = sub.add_parser(
        "recipes", parents=[common], help="list the named recipes, or print one as YAML"
    )
    p.add_argument("name", nargs="?", help="preset name, e.g. static-int8")
    p.set_defaults(func=_cmd_recipes)

    p = sub.add_parser("passes", parents=[common], help="list the compression techniques")
    p.set_defaults(func=_cmd_passes)

    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run the benchmark suite (from a source checkout; same as `make bench`)",
        description="Arguments are passed to the suite: --suite quick|full, --models a,b, "
        "--out PATH, --threads N.",
    )
    p.set_defaults(func=_cmd_bench, bench_args=[])

    # login, projects, upload, submit, status, download: against a ModelPress server.
    remote.add_commands(sub, common)
    return parser


def _cmd_inspect(args: argparse.Namespace) -> int:
    import onnx

    from compress_engine.measure.inputs import resolve_shapes
    from compress_engine.measure.macs import count_macs

    require_onnx(args.model, "inspect")
    with tempfile.TemporaryDirectory(prefix="modelpress-inspect-") as tmp:
        # A model zip (ONNX with external data) is looked at unpacked.
        model = unpack_zip(args.model, Path(tmp)) if is_onnx_zip(args.model) else args.model
        info = inspect_onnx(model)
        macs_proto = onnx.load(str(model), load_external_data=False)
    print(format_model_info(info))
    shapes = resolve_shapes(info.inputs, 1)
    macs = count_macs(macs_proto, shapes)
    if macs.total is None:
        print("MACs:       unknown (shapes could not be inferred)")
    else:
        uncounted = ", ".join(f"{op} x{n}" for op, n in macs.uncounted_op_types.items())
        print(
            f"MACs:       {macs.total:,} at {shapes}"
            + (f"; not counted: {uncounted}" if uncounted else "")
        )
    return 0


def _cmd_compress(args: argparse.Namespace) -> int:
    from compress_engine.api import compress
    from compress_engine.llm.entry import is_llm_source

    llm = is_llm_source(args.model)
    if args.recipe is not None:
        try:
            text = args.recipe.read_text(encoding="utf-8")
        except OSError as exc:
            raise EngineError(f"Cannot read the recipe file: {exc}") from None
        recipe = Recipe.parse(text)
    elif args.preset is not None:
        recipe = get_preset(args.preset).recipe()
    else:
        recipe = get_preset("llm-int4").recipe() if llm else default_recipe()
    recipe = with_input_shapes(recipe, input_shapes(args.input_shape))
    if not llm:
        require_onnx(args.model, "compress")
    out = args.out or args.model.with_suffix(".compressed")
    teachers = _teachers(args.teacher)
    progress = None if args.quiet else _progress_display(sys.stderr)
    on_training = None if args.quiet else _training_printer(progress, sys.stderr)
    if args.quiet:  # the run's summary of library warnings (library_logs) stays unprinted
        logging.getLogger(LIBRARY_LOGGER).setLevel(logging.CRITICAL)
    try:
        report = compress(
            args.model,
            recipe,
            data=args.data,
            out_dir=out,
            progress=progress,
            on_training=on_training,
            teachers=teachers,
        )
    finally:
        if isinstance(progress, _ProgressBar):
            progress.close()
    print(format_llm_report(report) if report.llm else format_report(report))
    files = [a.name for a in report.files] + ["recipe.yaml", "report.json"]
    if args.bundle:
        from compress_engine.bundle import write_bundle

        with (out / "bundle.zip").open("wb") as target:
            files_in = [(a.name, lambda p=out / a.name: p.open("rb")) for a in report.files]
            write_bundle(target, report, files_in)
        files.append("bundle.zip")
    print(f"\nwritten to {out}/: {', '.join(files)}")
    return 0


def input_shapes(values: list[str]) -> dict[str, list[int]]:
    """--input-shape values (NAME=DIMS, e.g. x=1x3x48x320) by input name."""
    from compress_engine.ingest.shapes import parse_input_shapes

    shapes: dict[str, list[int]] = {}
    for value in values:
        try:
            specs = parse_input_shapes(value)
        except EngineError as exc:
            raise EngineError(f"--input-shape {value!r}: {exc}") from None
        if len(specs) != 1 or specs[0].name is None or specs[0].dtype != "float32":
            raise EngineError(
                f"--input-shape takes one NAME=DIMS, e.g. x=1x3x48x320 (the input's name, its "
                f"dims joined by x; the dtype comes from the model), got {value!r}."
            )
        if specs[0].name in shapes:
            raise EngineError(f"--input-shape names {specs[0].name!r} twice.")
        shapes[specs[0].name] = specs[0].shape
    return shapes


def _teachers(pairs: list[str]) -> dict[str, Path]:
    teachers = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise EngineError(f"--teacher takes NAME=PATH, got {pair!r}.")
        if not Path(path).is_file():
            raise EngineError(f"--teacher {name}: no such file {path!r}.")
        teachers[name] = Path(path)
    return teachers


def _training_printer(progress: Any, stream: TextIO) -> Callable[[TrainingPoint], None]:
    """One line per epoch, written above the progress bar when there is one."""

    def show(p: TrainingPoint) -> None:
        metric = f"{p.val_metric:.2f}%" if p.metric == "accuracy" else f"{p.val_metric:.4f}"
        loss = "-" if p.train_loss is None else f"{p.train_loss:.4f}"
        eta = "" if p.eta_s is None else f", ETA {p.eta_s:.0f} s"
        line = f"{p.kind} epoch {p.epoch}: loss {loss}, validation {p.metric} {metric}{eta}"
        if isinstance(progress, _ProgressBar):
            progress.write(line)
        else:
            print(line, file=stream, flush=True)

    return show


def _cmd_recipe(args: argparse.Namespace) -> int:
    if args.reference:
        from compress_engine.reference import recipe_reference_markdown

        print(recipe_reference_markdown(), end="")
    elif args.schema:
        import json

        print(json.dumps(Recipe.model_json_schema(), indent=2))
    else:
        print(default_recipe().to_yaml(), end="")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    if args.name:
        preset = get_preset(args.name)
        print(f"# {preset.title}: {preset.description}")
        print(preset.recipe().to_yaml(), end="")
        return 0
    width = max(len(name) for name in PRESETS)
    for preset in PRESETS.values():
        needs = "needs data" if preset.needs_data else "no data needed"
        print(f"{preset.name:<{width}}  {preset.title} ({needs})")
        print(f"{'':<{width}}  {preset.description}")
    print(
        "\nPrint one as YAML: modelpress recipes NAME; run one: modelpress compress --preset NAME"
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    # The suite lives in the repository's benchmarks/ folder, next to workers/, and needs the
    # `bench` extra; it is not part of the installed engine, which never imports it: it runs
    # as its own process from the checkout, as `make bench` runs it.
    checkout = source_checkout()
    if checkout is None:
        raise EngineError(
            "`modelpress bench` runs the benchmark suite of a source checkout (its benchmarks/ "
            "folder), and this engine is not installed from one: clone the repository, then "
            "`pip install -e '.[bench]'` and `make bench`."
        )
    command = [sys.executable, "-m", "benchmarks", *args.bench_args]
    return subprocess.run(command, cwd=checkout, check=False).returncode


def source_checkout() -> Path | None:
    """The repository this engine runs from (workers/compress_engine/ inside it), if it has
    the benchmark suite; None for an installed engine."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "benchmarks" / "__main__.py").is_file() else None


def _cmd_passes(_args: argparse.Namespace) -> int:
    for info in list_passes():
        needs = "needs data" if info.needs_data else "no data needed"
        print(f"{info.name:<24} {info.title} ({needs}, {info.compute})")
        print(f"{'':<24} {info.description}")
    return 0


def _progress_display(stream: TextIO) -> _ProgressBar | _ProgressPrinter:
    # A live bar on a terminal; plain lines in logs and pipes, where redraws are noise.
    return _ProgressBar(stream) if stream.isatty() else _ProgressPrinter(stream)


class _ProgressBar:
    """One bar for the whole run; its label is the current stage."""

    def __init__(self, stream: TextIO) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=100,
            file=stream,
            bar_format="{desc:<30} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
        )
        self._stage = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self._stage:
            self._stage = stage
            self._bar.set_description_str(stage, refresh=False)
        self._bar.n = round(fraction * 100, 1)
        self._bar.refresh()

    def write(self, line: str) -> None:
        self._bar.write(line, file=self._bar.fp)

    def close(self) -> None:
        self._bar.close()


class _ProgressPrinter:
    """Prints a line per stage and per 10% step, not per callback."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last: tuple[str, int] | None = None

    def __call__(self, stage: str, fraction: float) -> None:
        key = (stage, int(fraction * 10))
        if key != self._last:
            self._last = key
            print(f"[{fraction:4.0%}] {stage}", file=self._stream, flush=True)


# --- formatting ------------------------------------------------------------------------


def _shape(t: TensorInfo) -> str:
    if not t.rank_known:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in t.shape) + "]"


def format_model_info(info: ModelInfo) -> str:
    lines = [
        f"producer:   {info.producer or '(unknown)'}",
        f"IR version: {info.ir_version}   opset: {info.opset}",
        f"parameters: {info.parameters:,}   nodes: {info.nodes}   size: {_bytes(info.size_bytes)}",
        "inputs:",
        *(f"  {t.name}: {t.dtype} {_shape(t)}" for t in info.inputs),
        "outputs:",
        *(f"  {t.name}: {t.dtype} {_shape(t)}" for t in info.outputs),
        "ops: " + ", ".join(f"{k} x{v}" for k, v in info.op_types.items()),
    ]
    return "\n".join(lines)


def format_llm_report(report: Report) -> str:
    """A language model's figures (the same table as the genai zip's README)."""
    from compress_engine.llm.report_text import figures_table, method_text

    assert report.llm is not None
    rows = [row for row in figures_table(report.llm) if row]
    verdict = (
        "recommended"
        if report.recommended
        else "not recommended: " + "; ".join(report.quality_reasons)
    )
    return "\n".join([f"weights: {method_text(report.llm)}", *rows, verdict, *report.notes])


def format_report(report: Report) -> str:
    o, r = report.original, report.result
    rows = [
        ("", "original", "compressed", "ratio"),
        ("size", _bytes(o.size_bytes), _bytes(r.size_bytes), _x(report.size_ratio)),
        ("parameters", f"{o.parameters:,}", f"{r.parameters:,}", _x(report.param_ratio)),
        (
            f"latency p50 (batch {o.latency.batch_size})",
            f"{o.latency.p50_ms:.3f} ms",
            f"{r.latency.p50_ms:.3f} ms",
            _x(report.latency_ratio),
        ),
    ]
    for b, lat in list(o.latency_by_batch.items())[1:]:
        got = r.latency_by_batch.get(b)
        if got is not None:
            ratio = got.p50_ms / lat.p50_ms if lat.p50_ms else None
            rows.append(
                (
                    f"latency p50 (batch {b})",
                    f"{lat.p50_ms:.3f} ms",
                    f"{got.p50_ms:.3f} ms",
                    _x(ratio),
                )
            )
    if o.macs is not None and r.macs is not None:
        rows.append(
            (
                "MACs (batch 1)",
                f"{o.macs:,}",
                f"{r.macs:,}",
                _x(r.macs / o.macs if o.macs else None),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    table = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines = [*table, *_speed_lines(report), *fidelity_lines(report)]
    if report.accuracy is not None:
        a = report.accuracy
        acc = (
            f"accuracy ({a.samples} labelled samples): top-1 {a.original_top1:.2%} -> "
            f"{a.result_top1:.2%} (drop {a.drop_points:.2f} points)"
        )
        if a.original_top5 is not None and a.result_top5 is not None:
            acc += f", top-5 {a.original_top5:.2%} -> {a.result_top5:.2%}"
        lines.append(acc)
    lines.append(f"device: {report.device}")
    if report.quantization is not None:
        q = report.quantization
        types = ", ".join(f"{k} x{v}" for k, v in q.op_types.items()) or "none"
        lines.append(f"quantized nodes: {q.quantized_nodes} ({types}), weights {q.weight_type}")
    if report.search is not None:
        sr = report.search
        lines.append(
            f"accuracy-aware: {len(sr.trials)} trial(s), kept trial {sr.chosen} "
            f"({sr.metric} {sr.trials[sr.chosen].metric:.7g}, budget {sr.budget:.10g}, "
            f"{'met' if sr.met else 'missed'}); in float: "
            f"{', '.join(sr.trials[sr.chosen].kept_in_float) or 'none'}"
        )
    if report.auto is not None:
        lines.append(f"auto: {report.auto.pick or 'kept the original'}: {report.auto.reason}")
    if report.pruning is not None:
        pr = report.pruning
        kept = ", ".join(f"{layer.name} {layer.after}/{layer.before}" for layer in pr.layers)
        lines.append(
            f"pruning ({pr.method}, {pr.importance}, amount {pr.amount:.2f}): parameters "
            f"{pr.parameters_before:,} -> {pr.parameters_after:,}, MACs {pr.macs_before:,} -> "
            f"{pr.macs_after:,}; kept: {kept}"
        )
    for t in report.training:
        lines.append(
            f"{t.kind} on {t.device}: validation {t.metric} {t.before:.4g} -> {t.best:.4g} "
            f"(best epoch {t.best_epoch} of {t.epochs_run}, {t.optimizer_steps} steps, "
            f"{t.seconds_per_step * 1000:.1f} ms/step)"
        )
    lines += [_artifact_line(a) for a in report.artifacts if a.check or not a.ok]
    lines += [f"note: {n}" for n in report.notes]
    lines += verdict_lines(report)
    return "\n".join(lines)


def _speed_lines(report: Report) -> list[str]:
    """The speed change per batch size with its noise band, and the shapes it was timed at."""
    batches = list(report.original.latency_by_batch) or [str(report.original.latency.batch_size)]
    lines = [f"speed (batch {b}): {report.speed_text(b)}" for b in batches]
    lines += [
        f"speed ({rt.runtime}): {rt.speed_text()}"
        for rt in report.runtimes
        if rt.speedup is not None and rt.original != report.original.latency
    ]
    return [*lines, f"timed at: {report.timed_shapes_text()}"]


def _artifact_line(a: ArtifactInfo) -> str:
    """One line per checked (or failed) artifact: what its own runtime measured."""
    if not a.ok:
        return f"{a.name}: FAILED, not written: {a.failure}"
    c = a.check
    assert c is not None
    parts = [_bytes(a.size_bytes), f"cosine {_num(c.cosine_similarity, 6)}"]
    if c.accuracy_top1 is not None:
        parts.append(f"top-1 {c.accuracy_top1:.2%}")
    if c.conversion_max_abs_diff is not None:
        parts.append(f"conversion max abs diff {_num(c.conversion_max_abs_diff)}")
    if c.latency is not None:
        parts.append(f"p50 {c.latency.p50_ms:.3f} ms ({c.runtime})")
    parts += [f"{name} {layout}" for name, layout in a.layouts.items()]
    return f"{a.name}: ok, " + ", ".join(parts)


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _num(v: float | None, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}"


if __name__ == "__main__":
    sys.exit(main())
