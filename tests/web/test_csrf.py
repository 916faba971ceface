"""CSRF protection on every route that takes a POST: forms, htmx actions and the API under a
login session (API tokens need none: they are not sent by browsers on their own)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter, UUIDConverter

from conftest import PASSWORD

pytestmark = pytest.mark.django_db


def _patterns(resolvers, prefix=""):
    """(pattern, full name) of every named route, the admin's and the API's included."""
    for entry in resolvers:
        if isinstance(entry, URLResolver):
            inner = f"{prefix}{entry.namespace}:" if entry.namespace else prefix
            yield from _patterns(entry.url_patterns, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            yield entry, prefix + entry.name


def _sample(converter) -> object:
    if isinstance(converter, UUIDConverter):
        return uuid.uuid4()
    if isinstance(converter, IntConverter):
        return 1
    return "x"


def _post_routes():
    for pattern, name in _patterns(get_resolver().url_patterns):
        kwargs = {key: _sample(c) for key, c in pattern.pattern.converters.items()}
        try:
            yield name, reverse(name, kwargs=kwargs)
        except Exception:  # admin routes with regex groups; covered by the admin login below
            continue


def test_it_refuses_a_post_without_a_csrf_token_on_every_route(owner):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner.user)
    checked = []
    for name, url in _post_routes():
        response = browser.post(url, {"name": "x"})
        # The API answers 405 first on routes that take no POST at all.
        refused = (403, 405) if name.startswith("api-v1:") else (403,)
        assert response.status_code in refused, f"{name} ({url}) took a POST without a CSRF token"
        checked.append((name, response.status_code))
    names = {name for name, _ in checked}
    assert {"accounts-login", "registry-upload", "jobs-create", "admin:login"} <= names
    assert ("api-v1:create_project_route", 403) in checked


def test_it_accepts_the_login_form_with_its_token(owner):
    browser = Client(enforce_csrf_checks=True)
    page = browser.get(reverse("accounts-login"))
    token = page.cookies["csrftoken"].value

    response = browser.post(
        reverse("accounts-login"),
        {"username": owner.user.username, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )

    assert response.status_code == 302


def test_the_api_needs_no_csrf_token_with_a_bearer_token(owner, team):
    from accounts.tokens import create_token

    browser = Client(enforce_csrf_checks=True)
    raw = create_token(user=owner.user, name="script").raw

    response = browser.post(
        "/api/v1/projects",
        {"name": "from a script", "team": str(team.uuid)},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )

    assert response.status_code == 201
