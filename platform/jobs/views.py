from __future__ import annotations

import json
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from accounts.access import require_write
from jobs.access import get_artifact_for_user, get_job_for_user
from jobs.bundles import bundle_name, stream_bundle
from jobs.models import Job
from jobs.presenters import (
    artifact_check_note,
    artifact_rows,
    chart_data,
    comparison_rows,
    live_training,
    pruning_section,
    training_sections,
)
from jobs.services import JobRejected, cancel_job, create_job
from registry.access import get_model_version_for_user
from registry.models import ModelVersion


@login_required
@require_POST
def job_create(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    version = get_model_version_for_user(request.user, version_uuid)
    require_write(request.user, version.project.team)
    dataset = None
    if request.POST.get("dataset"):
        # Scoped to the model's project: another project's (or team's) dataset is a 404.
        dataset = get_object_or_404(version.project.datasets, uuid=request.POST["dataset"])
    try:
        job = create_job(
            model_version=version,
            user=request.user,
            recipe=request.POST.get("recipe", ""),
            dataset=dataset,
        )
    except JobRejected as exc:
        messages.error(request, f"The job was not started: {exc}")
        return redirect("registry-model-version", version_uuid=version.uuid)
    return redirect("jobs-detail", job_uuid=job.uuid)


@login_required
@require_GET
def recipe_preset(request: HttpRequest) -> HttpResponse:
    """The recipe editor filled with a preset's YAML (htmx swaps it into the job form)."""
    from compress_engine.presets import PRESETS

    preset = PRESETS.get(request.GET.get("preset", ""))
    if preset is None:
        return HttpResponse("Unknown preset.", status=404, content_type="text/plain")
    return render(
        request,
        "registry/model_version.html#recipe-editor",
        {"recipe_yaml": preset.recipe().to_yaml(), "preset": preset},
    )


def _teacher_names(job: Job, report) -> dict[str, str]:
    """Display names of the model versions a report's distill steps learned from, looked up
    within the job's team (a name from elsewhere is never shown)."""
    ids = {t.teacher for t in report.training if t.teacher and t.teacher != "original"}
    valid = []
    for value in ids:
        try:
            valid.append(UUID(value))
        except ValueError:
            continue
    versions = ModelVersion.objects.filter(project__team=job.team, uuid__in=valid)
    return {str(v.uuid): f"{v.name} v{v.version}" for v in versions}


def _job_context(job: Job) -> dict:
    from compress_engine import Report

    context: dict = {"job": job, "report": None, "rows": [], "live_training": None}
    if job.report:
        report = Report.model_validate(job.report)
        context.update(
            report=report,
            rows=comparison_rows(report),
            artifact_rows=artifact_rows(report, job.artifacts.all()),
            artifact_check_note=artifact_check_note(report),
            chart_data=chart_data(report),
            training_sections=training_sections(report, _teacher_names(job, report)),
            pruning=pruning_section(report),
            report_json=json.dumps(job.report, indent=2),
        )
    else:
        context["live_training"] = live_training(job)
    return context


@login_required
@require_GET
def job_detail(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    return render(request, "jobs/detail.html", _job_context(job))


@login_required
@require_GET
def job_status(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """The live status region; answers 286 once the job is terminal so htmx stops polling."""
    job = get_job_for_user(request.user, job_uuid)
    html = render(request, "jobs/detail.html#job-status", _job_context(job)).content
    if job.is_terminal:
        return HttpResponseStopPolling(html)
    return HttpResponse(html)


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    require_write(request.user, job.team)
    if not cancel_job(job):
        messages.info(request, "The job had already finished.")
    return redirect("jobs-detail", job_uuid=job.uuid)


@login_required
@require_GET
def artifact_download(request: HttpRequest, artifact_uuid: UUID) -> FileResponse:
    artifact = get_artifact_for_user(request.user, artifact_uuid)
    # FileResponse streams the file in blocks; it is never read whole into memory.
    return FileResponse(artifact.file.open("rb"), as_attachment=True, filename=artifact.name)


@login_required
@require_GET
def bundle_download(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    if job.status != Job.Status.SUCCEEDED or not job.report:
        return HttpResponse(
            "Only a finished job has a bundle.", status=404, content_type="text/plain"
        )
    response = StreamingHttpResponse(stream_bundle(job), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{bundle_name(job)}"'
    return response


@login_required
@require_GET
def report_download(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    if not job.report:
        return HttpResponse("This job has no report yet.", status=404, content_type="text/plain")
    response = HttpResponse(
        json.dumps(job.report, indent=2), content_type="application/json; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="report-{job.uuid}.json"'
    return response
