"""Turns an engine Report into rows the results page renders (before, after, change)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.template.defaultfilters import filesizeformat

from web.templatetags.report_format import significant


@dataclass(frozen=True)
class ComparisonRow:
    label: str
    before: str
    after: str
    change: str
    better: bool | None  # None: no direction (e.g. unchanged)


def _ratio_text(before: float, after: float) -> str:
    if before == 0:
        return "n/a"
    return f"{after / before:.2f}\u00d7"  # multiplication sign


def comparison_rows(report: Any) -> list[ComparisonRow]:
    """`report` is a compress_engine.Report."""
    original, result = report.original, report.result
    rows = [
        ComparisonRow(
            "File size",
            filesizeformat(original.size_bytes),
            filesizeformat(result.size_bytes),
            _ratio_text(original.size_bytes, result.size_bytes),
            _direction(result.size_bytes, original.size_bytes),
        ),
        _count_row("Parameters", original.parameters, result.parameters),
    ]
    rows += _latency_rows(report)
    if original.macs and result.macs:
        rows.append(_count_row("MACs (batch 1)", original.macs, result.macs))
    return rows


def _count_row(label: str, before: int, after: int) -> ComparisonRow:
    """A row for a count (parameters, MACs): thousands separators, ratio, direction."""
    return ComparisonRow(
        label, f"{before:,}", f"{after:,}", _ratio_text(before, after), _direction(after, before)
    )


# Changes smaller than this (e.g. a few quantization scales added to the parameter count,
# or timer noise) are shown as neutral rather than better or worse.
NEUTRAL_BAND = 0.01


def _latency_rows(report: Any) -> list[ComparisonRow]:
    """p50 per measured batch size (p90 too at the first), original and result interleaved.
    The p50 change is said with its noise band ("1.42× faster (noise ±4%)"), and is better or
    worse only beyond it."""
    original, result = report.original, report.result
    by_batch = original.latency_by_batch or {str(original.latency.batch_size): original.latency}
    rows = []
    for index, (batch, before) in enumerate(by_batch.items()):
        after = result.latency_by_batch.get(batch, result.latency if index == 0 else None)
        if after is None:
            continue
        stats = (("p50", "p50_ms"), ("p90", "p90_ms")) if index == 0 else (("p50", "p50_ms"),)
        for label, attr in stats:
            b, a = getattr(before, attr), getattr(after, attr)
            band = report.latency_noise_by_batch.get(batch)
            verdict = None if band is None or a <= 0 else band.verdict(b / a)
            rows.append(
                ComparisonRow(
                    f"Latency {label}, batch {batch}",
                    f"{b:.3f} ms",
                    f"{a:.3f} ms",
                    report.speed_text(batch) if label == "p50" else _ratio_text(b, a),
                    _direction(a, b) if verdict is None else _SPEED_DIRECTION[verdict],
                )
            )
    return rows


_SPEED_DIRECTION = {"faster": True, "slower": False, "unchanged": None}


def _direction(after: float, before: float) -> bool | None:
    if before == 0 or abs(after - before) / abs(before) < NEUTRAL_BAND:
        return None
    return after < before


def chart_data(report: Any) -> dict[str, Any]:
    """Compressed as a percentage of the original, for the results bar chart."""
    original, result = report.original, report.result
    pairs = [
        ("File size", original.size_bytes, result.size_bytes),
        ("Parameters", original.parameters, result.parameters),
        ("Latency p50", original.latency.p50_ms, result.latency.p50_ms),
    ]
    return {
        "labels": [label for label, _, _ in pairs],
        "percent": [
            round(100 * after / before, 1) if before else None for _, before, after in pairs
        ],
    }


# --- artifacts -------------------------------------------------------------------------------


# How a format reads on the page where its short name would not say enough.
FORMAT_LABELS = {"genai-zip": "onnxruntime-genai folder (zip)"}


@dataclass(frozen=True)
class ArtifactRow:
    """One file the run produced or tried to produce (a failed export has no download)."""

    name: str
    format: str
    format_label: str
    precision: str
    ok: bool
    status: str  # "ok" | "failed", also the row's data-status
    failure: str
    download_uuid: Any  # the stored Artifact's uuid; None = nothing to download
    size: str
    notes: list[str]  # what it was made from, input layouts and dtypes that differ from ONNX
    runtime: str  # e.g. "LiteRT 2.3.0"; "–" when the file was not run (older reports)
    provider: str
    cosine: str
    max_abs_diff: str
    conversion_error: str
    latency_p50: str
    sha256: str


def artifact_rows(report: Any, stored: Iterable[Any]) -> list[ArtifactRow]:
    """Every artifact of the report, failed exports included, in the report's order.

    `stored` are the job's Artifact rows; a row gets a download link only when its report
    entry is ok and a stored file of that name exists. Reports written before exports could
    fail carry no status: the pydantic defaults read them as ok, without a check.
    """
    by_name = {artifact.name: artifact for artifact in stored}
    rows = []
    for info in report.artifacts:
        check = info.check
        download = by_name.get(info.name) if info.ok else None
        rows.append(
            ArtifactRow(
                name=info.name,
                format=info.format,
                format_label=FORMAT_LABELS.get(info.format, info.format),
                precision=info.precision,
                ok=info.ok,
                status=info.status,
                failure=info.failure or "",
                download_uuid=download.uuid if download is not None else None,
                size=filesizeformat(info.size_bytes) if info.ok else "–",
                notes=_artifact_notes(info) if info.ok else [],
                runtime=check.runtime if check else "–",
                provider=check.provider if check else "",
                cosine=_fixed(check.cosine_similarity if check else None, 6),
                max_abs_diff=significant(check.max_abs_diff if check else None),
                conversion_error=significant(check.conversion_max_abs_diff if check else None),
                latency_p50=f"{check.latency.p50_ms:.3f} ms" if check and check.latency else "–",
                sha256=info.sha256 if info.ok else "",
            )
        )
    return rows


def artifact_check_note(report: Any) -> str:
    """How the files were checked, from the first file that was run ("" if none was)."""
    checked = next((a for a in report.artifacts if a.check is not None), None)
    if checked is None:
        return ""
    check = checked.check
    if report.llm is not None:
        return (
            f"{checked.name} was loaded by {check.runtime} and generated ({check.inputs}) before "
            "it was offered; its figures are the compressed model's above."
        )
    if check.inputs == "random":
        inputs = f"{check.samples} seeded random inputs (no dataset)"
    else:
        inputs = f"{check.samples} samples of the {check.inputs}"
    return (
        f"Each file was run in its own runtime on {inputs} and compared with the original "
        "model; the conversion error is a converted file against the ONNX model it was "
        "converted from."
    )


def _artifact_notes(info: Any) -> list[str]:
    """What the file was made from, and its inputs where they differ from the ONNX model's
    (e.g. "input: NHWC": TFLite image inputs are channel-last)."""
    notes = [f"from {info.source}"] if info.source else []
    if info.converter:  # TFLite files: which converter route made it
        notes.append(f"made by {info.converter}")
    for name in dict.fromkeys([*info.layouts, *info.input_dtypes]):
        parts = [info.layouts.get(name), info.input_dtypes.get(name)]
        notes.append(f"{name}: {', '.join(p for p in parts if p)}")
    for name, shape in info.input_shapes.items():
        notes.append(f"{name} fixed at {'x'.join('?' if d is None else str(d) for d in shape)}")
    return notes


def _fixed(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# --- training (distill / finetune) -------------------------------------------------------

# Chart axis titles and names in running text, per TrainingPoint.metric.
METRIC_LABELS = {
    "accuracy": "Validation top-1 (%)",
    "cosine": "Validation cosine to the teacher",
    "loss": "Validation loss",
}
METRIC_NAMES = {
    "accuracy": "validation top-1",
    "cosine": "validation cosine to the teacher",
    "loss": "validation loss",
}


def metric_text(metric: str, value: float | None) -> str:
    """A validation metric as the report states it (accuracy is already in percent)."""
    if value is None:
        return "–"
    if metric == "accuracy":
        return f"{value:.2f}%"
    if metric == "cosine":
        return f"{value:.5f}"
    return f"{value:.4g}"


def duration_text(seconds: float | None) -> str:
    """12.3 -> "12 s", 190 -> "3 min 10 s", 4000 -> "1 h 6 min"."""
    if seconds is None:
        return "–"
    if seconds < 1:
        return "under a second"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def training_chart(points: list[Any], best_epoch: int | None = None) -> dict[str, Any]:
    """Train loss and validation metric per epoch, for a chart.js line chart.

    `points` are compress_engine TrainingPoints of one training run (epoch 0 = before any
    training, which has a metric but no loss yet).
    """
    metric = points[0].metric if points else "accuracy"
    return {
        "labels": [p.epoch for p in points],
        "loss": [p.train_loss for p in points],
        "metric": [p.val_metric for p in points],
        "metric_label": METRIC_LABELS.get(metric, metric),
        "best_epoch": best_epoch,
    }


@dataclass(frozen=True)
class TrainingSection:
    """One distill/finetune step of a report, ready for the results page."""

    index: int
    details: Any  # compress_engine TrainingDetails
    teacher: str
    before: str
    best: str
    metric_name: str
    chart: dict[str, Any]
    chart_id: str


def training_sections(report: Any, teacher_names: dict[str, str]) -> list[TrainingSection]:
    """`teacher_names` maps model version ids to display names (resolved within the team)."""
    sections = []
    for i, details in enumerate(report.training):
        teacher = details.teacher or ""
        if teacher == "original":
            teacher = "the original model"
        elif teacher:
            teacher = teacher_names.get(teacher, teacher)
        sections.append(
            TrainingSection(
                index=i,
                details=details,
                teacher=teacher,
                before=metric_text(details.metric, details.before),
                best=metric_text(details.metric, details.best),
                metric_name=METRIC_NAMES.get(details.metric, details.metric),
                chart=training_chart(details.history, details.best_epoch),
                chart_id=f"training-data-{i}",
            )
        )
    return sections


@dataclass(frozen=True)
class LiveTraining:
    """Where the running job's training stands (the last run of points)."""

    step: int  # 1-based, as a user counts recipe steps
    kind: str
    epoch: int
    epochs: int | None  # asked for; early stopping may end sooner
    metric_name: str
    metric: str
    best: str
    eta: str | None
    elapsed: str
    chart: dict[str, Any]


def live_training(job: Any) -> LiveTraining | None:
    """The training curve of the run in progress, from job.training; None without points.

    A pruning step with recovery trains several times (epochs restart at 0), so the chart
    shows the points since the last epoch 0.
    """
    from compress_engine import TrainingPoint

    if not job.training:
        return None
    points = [TrainingPoint.model_validate(p) for p in job.training]
    start = max((i for i, p in enumerate(points) if p.epoch == 0), default=0)
    run = [p for p in points[start:] if (p.step, p.kind) == (points[-1].step, points[-1].kind)]
    last = run[-1]
    values = [p.val_metric for p in run]
    best = min(values) if last.metric == "loss" else max(values)
    return LiveTraining(
        step=last.step + 1,
        kind={"recover": "recovery after pruning"}.get(last.kind, last.kind),
        epoch=last.epoch,
        epochs=_epochs_asked(job, last.step, last.kind),
        metric_name=METRIC_NAMES.get(last.metric, last.metric),
        metric=metric_text(last.metric, last.val_metric),
        best=metric_text(last.metric, best),
        eta=None if last.eta_s is None else duration_text(last.eta_s),
        elapsed=duration_text(last.elapsed_s),
        chart=training_chart(run),
    )


def _epochs_asked(job: Any, step: int, kind: str) -> int | None:
    from compress_engine import EngineError

    try:
        cfg = next(iter(dict(job.recipe_obj.steps[step]).values()))
    except (IndexError, EngineError):
        return None
    if kind == "recover":
        return getattr(cfg, "recover_epochs", None)
    return getattr(cfg, "epochs", None)


# --- pruning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrunedLayerRow:
    name: str
    kind: str
    before: int
    after: int
    kept_percent: float | None
    ignored: bool


@dataclass(frozen=True)
class PruningSection:
    details: Any  # compress_engine PruningDetails
    unit: str  # what a layer's before/after counts: channels, or weights (magnitude)
    rows: list[ComparisonRow]  # parameters and MACs, before -> after
    layers: list[PrunedLayerRow]
    round_trip_ok: bool


def pruning_section(report: Any) -> PruningSection | None:
    pruning = report.pruning
    if pruning is None:
        return None
    unit = "weights" if pruning.method == "magnitude" else "channels"
    rows = [
        _count_row(
            "Parameters" if pruning.method == "channel" else "Non-zero parameters",
            pruning.parameters_before,
            pruning.parameters_after,
        ),
        _count_row("MACs (one sample)", pruning.macs_before, pruning.macs_after),
    ]
    ignored = set(pruning.ignored)
    layers = [
        PrunedLayerRow(
            name=layer.name,
            kind=layer.kind,
            before=layer.before,
            after=layer.after,
            kept_percent=round(100 * layer.after / layer.before, 1) if layer.before else None,
            ignored=layer.name in ignored,
        )
        for layer in pruning.layers
    ]
    trip = pruning.round_trip
    return PruningSection(
        details=pruning,
        unit=unit,
        rows=rows,
        layers=layers,
        round_trip_ok=trip.max_abs_diff <= trip.tolerance,
    )
