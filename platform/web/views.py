from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from accounts.access import teams_for
from jobs.metrics import REGISTRY
from registry.access import projects_for
from registry.forms import ProjectForm
from web.health import PROBES, run_checks


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
    probe = request.GET.get("probe")
    if probe is not None and probe not in PROBES:
        allowed = ", ".join(PROBES)
        return JsonResponse({"ok": False, "error": f"probe must be one of: {allowed}"}, status=400)
    ok, checks = run_checks(None if probe is None else PROBES[probe])
    return JsonResponse({"ok": ok, "checks": checks}, status=200 if ok else 503)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics (jobs.metrics) for a scraper holding MODELPRESS_METRICS_TOKEN.

    Without a configured token the endpoint does not exist (404), so a deployment that never
    set one exposes nothing.
    """
    token = settings.MODELPRESS_METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: MODELPRESS_METRICS_TOKEN is not set")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Digests of equal length compared in constant time: the response time reveals nothing
    # of the token, not even its length.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        _digest(given.strip()), _digest(token)
    ):
        response = HttpResponse(
            "Send the metrics token: Authorization: Bearer <MODELPRESS_METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="modelpress-metrics"'
        return response
    # The classic text format (0.0.4), which every Prometheus version reads.
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4)
