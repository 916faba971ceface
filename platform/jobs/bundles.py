"""The deployment bundle of a finished job, streamed from stored artifacts (never built whole
in memory or on disk)."""

from __future__ import annotations

from collections.abc import Iterator

from django.utils.text import slugify

from jobs.models import Job


def bundle_name(job: Job) -> str:
    # Model names are user text: slugified, they are safe in a Content-Disposition header.
    name = slugify(job.model_version.name) or "model"
    return f"modelpress-{name}-v{job.model_version.version}-{job.uuid}.zip"


def stream_bundle(job: Job) -> Iterator[bytes]:
    """Zip bytes: the job's offered artifacts (report.files) under models/, the report,
    REPORT.md, preprocessing and inference examples (compress_engine.iter_bundle)."""
    from compress_engine import Report, iter_bundle

    report = Report.model_validate(job.report)
    # Only the files the report offers (a failed export has no file), in the report's order.
    stored = {a.name: a for a in job.artifacts.all()}
    offered = [stored[info.name] for info in report.files if info.name in stored]
    artifacts = [(a.name, lambda a=a: a.file.open("rb")) for a in offered]
    return iter_bundle(report, artifacts)
