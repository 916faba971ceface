from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling, push_url

from accounts.access import can_delete, can_write, require_write
from accounts.models import User
from jobs.access import get_artifact_for_user, get_job_for_user, jobs_for
from jobs.bundles import bundle_name, stream_bundle
from jobs.compare import MAX_JOBS, MIN_JOBS, compare_rows, mixing_problem
from jobs.dashboard import jobs_table
from jobs.download_links import (
    LinkExpired,
    LinkRefused,
    issue_link,
    lifetime_minutes,
    record_link_download,
    resolve_link,
)
from jobs.downloads import artifact_response
from jobs.forms import form_from_post, initial_form, job_form_context
from jobs.live import eta_text, log_lines, stage_rows
from jobs.llm_results import llm_section
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
from jobs.prompts import prompt_region
from jobs.services import (
    JobRejected,
    cancel_job,
    create_job,
    delete_job,
    plan_job_deletion,
    record_download,
    retry_job,
)
from registry.access import get_model_version_for_user, get_project_for_user
from registry.models import ModelVersion
from web.queue_position import job_position


@login_required
@require_POST
def job_create(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    """Start a job from the form's YAML recipe; a refusal shows the form again, as sent."""
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
            request=request,
        )
    except JobRejected as exc:
        messages.error(request, f"The job was not started: {exc}")
        form = form_from_post(version, request.user, request.POST)
        context = {"version": version, **job_form_context(request.user, version, form)}
        return render(request, "jobs/new.html", context, status=422)
    return redirect("jobs-detail", job_uuid=job.uuid)


@login_required
@require_POST
def job_builder(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    """One builder action (preset, add/remove a step, a field or the YAML changed): the form
    comes back with the YAML regenerated and every error the engine would raise."""
    version = get_model_version_for_user(request.user, version_uuid)
    form = form_from_post(version, request.user, request.POST)
    context = {"version": version, **job_form_context(request.user, version, form)}
    if request.htmx:
        return render(request, "jobs/inc/job_form.html#job-form", context)
    return render(request, "jobs/new.html", context)


@login_required
@require_GET
def job_duplicate(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """Duplicate and edit: the job form with this job's recipe and dataset."""
    job = get_job_for_user(request.user, job_uuid)
    require_write(request.user, job.team)
    version = job.model_version
    form = initial_form(version, request.user, recipe=job.recipe_obj, dataset=job.dataset)
    context = {
        "version": version,
        "source_job": job,
        **job_form_context(request.user, version, form),
    }
    return render(request, "jobs/new.html", context)


@login_required
@require_POST
def job_retry(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """A new job with the same recipe, model version and dataset."""
    job = get_job_for_user(request.user, job_uuid)
    require_write(request.user, job.team)
    try:
        new = retry_job(job, user=request.user, request=request)
    except JobRejected as exc:
        messages.error(request, f"The job was not started again: {exc}")
        return redirect("jobs-detail", job_uuid=job.uuid)
    messages.success(request, "Started again with the same recipe, model and dataset.")
    return redirect("jobs-detail", job_uuid=new.uuid)


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


def _job_context(job: Job, user: User) -> dict:
    from compress_engine import Report

    context: dict = {
        "job": job,
        "report": None,
        "rows": [],
        "live_training": None,
        "stages": stage_rows(job),
        "eta": eta_text(job),
        "queue_position": job_position(job),
        "log_lines": log_lines(job),
        "can_write": can_write(user, job.team),
        "can_delete": can_delete(user, job.team),
    }
    if job.report:
        report = Report.model_validate(job.report)
        llm = llm_section(report)  # a language model's own figures, or None
        context.update(
            report=report,
            llm=llm,
            artifact_rows=artifact_rows(report, job.artifacts.all()),
            artifact_check_note=artifact_check_note(report),
            report_json=json.dumps(job.report, indent=2),
        )
        if llm is not None:  # "Ask both models" (jobs.prompts)
            context["ask"] = prompt_region(job, user)
        if llm is None:  # the ONNX sections, which a language model's page leaves out
            context.update(
                rows=comparison_rows(report),
                chart_data=chart_data(report),
                training_sections=training_sections(report, _teacher_names(job, report)),
                pruning=pruning_section(report),
            )
    else:
        context["live_training"] = live_training(job)
    return context


@login_required
@require_GET
def job_detail(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    return render(request, "jobs/detail.html", _job_context(job, request.user))


@login_required
@require_GET
def job_status(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """The live status region; answers 286 once the job is terminal so htmx stops polling."""
    job = get_job_for_user(request.user, job_uuid)
    html = render(request, "jobs/detail.html#job-status", _job_context(job, request.user)).content
    if job.is_terminal:
        return HttpResponseStopPolling(html)
    return HttpResponse(html)


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    require_write(request.user, job.team)
    if not cancel_job(job, user=request.user, request=request):
        messages.info(request, "The job had already finished.")
    return redirect("jobs-detail", job_uuid=job.uuid)


@login_required
@require_http_methods(["GET", "POST"])
def job_delete(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """Confirm page (GET) and deletion (POST) of a finished job (registry.deletion_views)."""
    from registry.deletion_views import confirm_delete

    job = get_job_for_user(request.user, job_uuid)
    return confirm_delete(
        request,
        team=job.team,
        plan=lambda: plan_job_deletion(job),
        delete=lambda: delete_job(job, user=request.user, request=request),
        back_url=reverse("jobs-detail", args=[job.uuid]),
        done_url=reverse("registry-model-version", args=[job.model_version.uuid]),
    )


@login_required
@require_GET
def artifact_download(request: HttpRequest, artifact_uuid: UUID) -> HttpResponse:
    """Streamed, or on S3 a redirect to a short-lived presigned URL (jobs.downloads)."""
    artifact = get_artifact_for_user(request.user, artifact_uuid)
    record_download(
        job=artifact.job,
        filename=artifact.name,
        target=artifact,
        user=request.user,
        request=request,
    )
    return artifact_response(artifact)


@login_required
@require_GET
def artifact_link(request: HttpRequest, artifact_uuid: UUID) -> HttpResponse:
    """A new signed download link to the artifact (jobs.download_links): a page that shows
    it, or for htmx the fragment alone, which the results page copies to the clipboard."""
    artifact = get_artifact_for_user(request.user, artifact_uuid)
    link = issue_link(artifact=artifact, user=request.user)
    context = {
        "artifact": artifact,
        "job": artifact.job,
        "link": link,
        "url": request.build_absolute_uri(link.path),
        "minutes": lifetime_minutes(),
    }
    template = "jobs/download_link.html" + ("#link" if request.htmx else "")
    response = render(request, template, context)
    response["Cache-Control"] = "private, no-store"  # the page holds a credential
    return response


@require_GET
def link_download(request: HttpRequest, token: str) -> HttpResponse:
    """Download through a signed link, no session needed: 410 once it has expired, 404 if it
    is tampered with or its artifact or issuer's membership is gone. Each use is audited."""
    try:
        link = resolve_link(token)
    except LinkExpired as exc:
        return HttpResponse(str(exc), status=410, content_type="text/plain; charset=utf-8")
    except LinkRefused as exc:
        return HttpResponse(str(exc), status=404, content_type="text/plain; charset=utf-8")
    record_link_download(link, request)
    return artifact_response(link.artifact)


@login_required
@require_GET
def bundle_download(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    job = get_job_for_user(request.user, job_uuid)
    if job.status != Job.Status.SUCCEEDED or not job.report:
        return HttpResponse(
            "Only a finished job has a bundle.", status=404, content_type="text/plain"
        )
    record_download(
        job=job, filename=bundle_name(job), target=job, user=request.user, request=request
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
    record_download(
        job=job,
        filename=f"report-{job.uuid}.json",
        target=job,
        user=request.user,
        request=request,
    )
    response["Content-Disposition"] = f'attachment; filename="report-{job.uuid}.json"'
    return response


@login_required
@require_GET
def project_jobs(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    """The project page's jobs table alone (htmx swaps it on filter, sort and page links)."""
    project = get_project_for_user(request.user, project_uuid)
    table = jobs_table(project, request.GET)
    if not request.htmx:
        return redirect(table.href(page=request.GET.get("page")))
    response = render(
        request, "registry/project.html#project-jobs", {"project": project, "jobs_table": table}
    )
    # The address bar shows the project page with these parameters: reload and share work.
    return push_url(response, table.href(page=table.page.number))


@login_required
@require_GET
def job_compare(request: HttpRequest) -> HttpResponse:
    """2-4 jobs side by side; a job outside the user's teams (or no job at all) is a 404."""
    try:
        wanted = list(dict.fromkeys(UUID(v) for v in request.GET.getlist("jobs")))
    except ValueError:
        raise Http404 from None
    if not MIN_JOBS <= len(wanted) <= MAX_JOBS:
        return render(
            request,
            "jobs/compare.html",
            {
                "problem": f"Pick {MIN_JOBS} to {MAX_JOBS} jobs to compare; "
                f"{len(wanted)} {'was' if len(wanted) == 1 else 'were'} given.",
            },
            status=400,
        )
    found = {
        j.uuid: j
        for j in jobs_for(request.user)
        .filter(uuid__in=wanted)
        .select_related("model_version", "project", "dataset")
        .prefetch_related("artifacts")
    }
    if len(found) != len(wanted):
        raise Http404
    jobs = [found[u] for u in wanted]
    if problem := mixing_problem(jobs):
        return render(request, "jobs/compare.html", {"problem": problem}, status=400)
    reports = [_report_or_none(j) for j in jobs]
    columns = [
        {
            "job": job,
            "report": report,
            "recipe_yaml": _recipe_yaml(job),
            "artifacts": artifact_rows(report, job.artifacts.all()) if report else [],
        }
        for job, report in zip(jobs, reports, strict=True)
    ]
    llm = any(job.model_version.is_llm for job in jobs)
    context = {"columns": columns, "rows": compare_rows(reports), "llm": llm}
    return render(request, "jobs/compare.html", context)


def _report_or_none(job: Job) -> Any:
    """The job's report through the engine's model; None without one (or an unreadable one:
    the column then shows dashes instead of the page failing)."""
    from pydantic import ValidationError

    from compress_engine import Report

    if not job.report:
        return None
    try:
        return Report.model_validate(job.report)
    except ValidationError:
        return None


def _recipe_yaml(job: Job) -> str:
    from compress_engine import EngineError

    try:
        return job.recipe_obj.to_yaml()
    except EngineError:
        return json.dumps(job.recipe, indent=2)
