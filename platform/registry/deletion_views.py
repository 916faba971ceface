"""Delete pages: GET shows what a deletion takes with it (or why it cannot happen yet), POST
deletes. Plain links and forms, so they work without JavaScript; owners and admins only
(a member or viewer gets 403, another team's object 404 as everywhere)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.access import require_delete
from accounts.models import Team
from registry.access import get_dataset_for_user, get_model_version_for_user, get_project_for_user
from registry.deletion import (
    DeletionPlan,
    DeletionRefused,
    delete_dataset,
    delete_model_version,
    delete_project,
    plan_dataset_deletion,
    plan_model_version_deletion,
    plan_project_deletion,
)


def confirm_delete(
    request: HttpRequest,
    *,
    team: Team,
    plan: Callable[[], DeletionPlan],
    delete: Callable[[], DeletionPlan],
    back_url: str,
    done_url: str,
) -> HttpResponse:
    """The confirm page (GET) or the deletion (POST); a refusal shows the page again with
    the reason (409)."""
    require_delete(request.user, team)
    refusal = None
    if request.method == "POST":
        try:
            done = delete()
        except DeletionRefused as exc:
            refusal = str(exc)
        else:
            messages.success(request, done.done_message())
            return redirect(done_url)
    shown = plan()
    context = {"plan": shown, "refusal": refusal or shown.refusal, "back_url": back_url}
    status = 409 if refusal else 200
    return render(request, "registry/confirm_delete.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def project_delete(request: HttpRequest, project_uuid: UUID) -> HttpResponse:
    project = get_project_for_user(request.user, project_uuid)
    return confirm_delete(
        request,
        team=project.team,
        plan=lambda: plan_project_deletion(project),
        delete=lambda: delete_project(project=project, user=request.user, request=request),
        back_url=reverse("registry-project", args=[project.uuid]),
        done_url=reverse("web-dashboard"),
    )


@login_required
@require_http_methods(["GET", "POST"])
def model_version_delete(request: HttpRequest, version_uuid: UUID) -> HttpResponse:
    version = get_model_version_for_user(request.user, version_uuid)
    return confirm_delete(
        request,
        team=version.project.team,
        plan=lambda: plan_model_version_deletion(version),
        delete=lambda: delete_model_version(version=version, user=request.user, request=request),
        back_url=reverse("registry-model-version", args=[version.uuid]),
        done_url=reverse("registry-project", args=[version.project.uuid]),
    )


@login_required
@require_http_methods(["GET", "POST"])
def dataset_delete(request: HttpRequest, dataset_uuid: UUID) -> HttpResponse:
    dataset = get_dataset_for_user(request.user, dataset_uuid)
    return confirm_delete(
        request,
        team=dataset.project.team,
        plan=lambda: plan_dataset_deletion(dataset),
        delete=lambda: delete_dataset(dataset=dataset, user=request.user, request=request),
        back_url=reverse("registry-dataset", args=[dataset.uuid]),
        done_url=reverse("registry-project", args=[dataset.project.uuid]) + "#datasets",
    )
