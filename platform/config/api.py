"""The REST API, version 1: one NinjaAPI assembled from the apps' routers, mounted at
/api/v1/ (OpenAPI document at /api/v1/openapi.json, browsable docs at /api/v1/docs; both,
like every route, for a signed-in session or an API token).

Every error is JSON `{"detail": "..."}`: the handlers below turn the exceptions the access
helpers and services raise into the status a client can act on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import django_auth

from accounts.api import router as accounts_router
from jobs.api import router as jobs_router
from registry.api import router as registry_router
from registry.services import too_large_message
from web.api import TokenAuth
from web.rejections import Rejected

AUTH_REQUIRED = (
    "Authentication required: send `Authorization: Bearer <token>` with a valid, unrevoked API "
    "token (Profile → API tokens), or sign in."
)


def _signed_in_docs(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The OpenAPI document and the docs page need what every route needs: a signed-in
    session or an API token. Anonymous browsers go to the login page, scripts get a 401."""

    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated or TokenAuth()(request) is not None:
            return view(request, *args, **kwargs)
        if request.path.endswith(".json"):
            response = JsonResponse({"detail": AUTH_REQUIRED}, status=401)
            response["WWW-Authenticate"] = 'Bearer realm="modelpress"'
            return response
        return redirect_to_login(request.get_full_path())

    return guarded


api = NinjaAPI(
    title="ModelPress API",
    version="1",
    description=(
        "Upload models and datasets, run compression jobs, follow them and download the "
        "results, with the same permissions as the web UI. Authenticate with "
        "`Authorization: Bearer <token>` (create a token under Profile → API tokens) or, in "
        'the browser, with your login session. Errors are JSON: `{"detail": "..."}`.'
    ),
    urls_namespace="api-v1",
    # Tried in order: a token first (scripts, the CLI), then the session (these docs), which
    # also requires the CSRF token on unsafe methods.
    auth=[TokenAuth(), django_auth],
    docs_decorator=_signed_in_docs,
)
api.add_router("", accounts_router)
api.add_router("", registry_router)
api.add_router("", jobs_router)


def _error(request: HttpRequest, status: int, detail: str, **extra: Any) -> HttpResponse:
    return api.create_response(request, {"detail": detail, **extra}, status=status)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = _error(request, 401, AUTH_REQUIRED)
    response["WWW-Authenticate"] = 'Bearer realm="modelpress"'
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    detail = str(exc)
    if exc.status_code == 403 and detail == "CSRF check Failed":
        detail = (
            "CSRF check failed: with session authentication, send the X-CSRFToken header; "
            "scripts should use an API token instead."
        )
    return _error(request, exc.status_code, detail)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    if getattr(request, "upload_too_large", False):
        # The upload handler dropped the file past the limit, so `file` looks missing.
        return _error(request, 413, too_large_message())
    problems = []
    for error in exc.errors:
        # loc is (source, parameter, field...), e.g. ("body", "payload", "name") or
        # ("query", "limit"): the source, and the body's parameter name, mean nothing to users.
        loc = list(error.get("loc", ()))[1:]
        if loc[:1] == ["payload"]:
            loc = loc[1:]
        where = ".".join(str(part) for part in loc)
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
    # Each entry without `ctx`/`input`/`url`: they may hold values that are not JSON.
    errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors]
    return _error(request, 422, "Invalid request: " + "; ".join(problems) + ".", errors=errors)


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    message = str(exc)
    # get_object_or_404's own wording names the model; say it in words instead. Objects of
    # other teams are "not found" too: their existence is not revealed.
    if not message or message.endswith("matches the given query."):
        message = "Not found, or not in any of your teams."
    return _error(request, 404, message)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _error(request, 403, str(exc) or "You do not have permission to do this.")


@api.exception_handler(Rejected)
def _rejected(request: HttpRequest, exc: Rejected) -> HttpResponse:
    # Every service refusal (registry, jobs, accounts, quotas) carries its own status.
    return _error(request, exc.status, str(exc))
