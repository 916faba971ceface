from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts.access import require_write, teams_for
from accounts.services import personal_team
from registry.access import get_model_version_for_user, get_project_for_user
from registry.forms import ModelUploadForm, ProjectForm
from registry.services import (
    RegistryRejected,
    create_project,
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


def _upload_form_context(project, form) -> dict:
    return {"project": project, "form": form}


@login_required
@require_GET
def project_detail(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)
    versions = project.model_versions.select_related("uploaded_by")
    return render(
        request,
        "registry/project.html",
        {**_upload_form_context(project, ModelUploadForm()), "versions": versions},
    )


@login_required
@require_http_methods(["POST"])
def model_upload(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    """Full-page form post or htmx post; errors re-render the form, success goes to the model."""
    project = get_project_for_user(request.user, project_uuid)
    require_write(request.user, project.team)
    form = ModelUploadForm(request.POST, request.FILES)
    if getattr(request, "upload_too_large", False):
        form.add_error("file", too_large_message())
    elif form.is_valid():
        try:
            version = ingest_model_upload(
                project=project,
                user=request.user,
                upload=form.cleaned_data["file"],
                name=form.cleaned_data["name"],
            )
        except RegistryRejected as exc:
            form.add_error("file", str(exc))
        else:
            url = reverse("registry-model-version", kwargs={"version_uuid": version.uuid})
            if request.htmx:
                return HttpResponseClientRedirect(url)
            return redirect(url)
    context = _upload_form_context(project, form)
    if request.htmx:
        # htmx swaps only 2xx responses by default, so the re-rendered form comes back as 200.
        return render(request, "registry/project.html#upload-form", context)
    versions = project.model_versions.select_related("uploaded_by")
    return render(request, "registry/project.html", {**context, "versions": versions}, status=422)


@login_required
@require_GET
def model_version_detail(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    from compress_engine.configs import default_recipe

    version = get_model_version_for_user(request.user, version_uuid)
    jobs = version.jobs.all()[:50]
    return render(
        request,
        "registry/model_version.html",
        {"version": version, "jobs": jobs, "default_recipe": default_recipe().to_yaml()},
    )
