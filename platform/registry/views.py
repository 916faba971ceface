from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.access import require_write, teams_for
from accounts.services import personal_team
from registry.access import get_model_version_for_user, get_project_for_user
from registry.forms import DatasetUploadForm, ModelUploadForm, ProjectForm
from registry.models import ModelVersion
from registry.services import (
    RegistryRejected,
    create_project,
    ingest_dataset_upload,
    ingest_model_upload,
    too_large_message,
)


@login_required
@require_POST
def project_create(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST)
    team_uuid = request.POST.get("team")
    team = teams_for(request.user).filter(uuid=team_uuid).first() if team_uuid else None
    team = team or personal_team(request.user)
    require_write(request.user, team)
    if form.is_valid():
        try:
            project = create_project(
                team=team,
                user=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except RegistryRejected as exc:
            messages.error(request, str(exc))
        else:
            return redirect("registry-project", project_uuid=project.uuid)
    else:
        messages.error(request, "A project needs a name (up to 100 characters).")
    return redirect("web-dashboard")


def _project_context(project) -> dict:
    return {
        "project": project,
        "upload_form": ModelUploadForm(),
        "dataset_form": DatasetUploadForm(),
        "versions": project.model_versions.select_related("uploaded_by"),
        "datasets": project.datasets.select_related("uploaded_by"),
    }


@login_required
@require_GET
def project_detail(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)
    return render(request, "registry/project.html", _project_context(project))


def _handle_upload(request, project, form_class, ingest, form_key: str) -> HttpResponse:
    """Full-page form post or htmx post: success redirects to the new object, errors
    re-render the form with the reason (the whole page, or only the form for htmx)."""
    require_write(request.user, project.team)
    form = form_class(request.POST, request.FILES)
    if getattr(request, "upload_too_large", False):
        form.add_error("file", too_large_message())
    elif form.is_valid():
        try:
            url = ingest(
                project=project,
                user=request.user,
                upload=form.cleaned_data["file"],
                name=form.cleaned_data["name"],
            )
        except RegistryRejected as exc:
            form.add_error("file", str(exc))
        else:
            return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
    if request.htmx:
        # htmx swaps only 2xx responses by default, so the re-rendered form comes back as 200.
        return render(
            request, f"registry/project.html#{form_key}", {"project": project, form_key: form}
        )
    context = {**_project_context(project), form_key: form}
    return render(request, "registry/project.html", context, status=422)


@login_required
@require_POST
def model_upload(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)

    def ingest(**kwargs) -> str:
        version = ingest_model_upload(**kwargs)
        return reverse("registry-model-version", kwargs={"version_uuid": version.uuid})

    return _handle_upload(request, project, ModelUploadForm, ingest, "upload_form")


@login_required
@require_POST
def dataset_upload(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)

    def ingest(**kwargs) -> str:
        ingest_dataset_upload(**kwargs)
        # No "#datasets" fragment: to the page already open, a fragment-only change would
        # scroll instead of reloading, and the new dataset would not appear.
        return reverse("registry-project", kwargs={"project_uuid": project.uuid})

    return _handle_upload(request, project, DatasetUploadForm, ingest, "dataset_form")


DEFAULT_PRESET = "fast-int8"


@login_required
@require_GET
def model_version_detail(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    from compress_engine.presets import PRESETS

    version = get_model_version_for_user(request.user, version_uuid)
    jobs = version.jobs.all()[:50]
    # Candidate distillation teachers: the team's other versions with the same inputs.
    others = (
        ModelVersion.objects.filter(project__team=version.project.team)
        .exclude(pk=version.pk)
        .select_related("project")[:200]
    )
    teachers = [v for v in others if v.takes_same_inputs(version)][:50]
    return render(
        request,
        "registry/model_version.html",
        {
            "version": version,
            "jobs": jobs,
            "datasets": version.project.datasets.all(),
            "teachers": teachers,
            "presets": PRESETS.values(),
            "preset": PRESETS[DEFAULT_PRESET],
            "recipe_yaml": PRESETS[DEFAULT_PRESET].recipe().to_yaml(),
        },
    )
