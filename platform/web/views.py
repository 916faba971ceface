from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.access import teams_for
from registry.access import projects_for
from registry.forms import ProjectForm
from web.health import run_checks


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("web-dashboard")
    return redirect("accounts-login")


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    projects = projects_for(request.user).select_related("team")
    return render(
        request,
        "web/dashboard.html",
        {"projects": projects, "teams": teams_for(request.user), "form": ProjectForm()},
    )


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    ok, checks = run_checks()
    return JsonResponse({"ok": ok, "checks": checks}, status=200 if ok else 503)
