"""The OpenAPI document and the browsable docs are for signed-in users and token holders, as
the README says: anonymous browsers are sent to the login page, anonymous scripts get a 401."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

DOCS, SCHEMA = "/api/v1/docs", "/api/v1/openapi.json"


def test_it_sends_an_anonymous_browser_to_the_login_page(client):
    response = client.get(DOCS)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert "next=/api/v1/docs" in response["Location"]


def test_it_answers_an_anonymous_schema_request_with_401(client):
    response = client.get(SCHEMA)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="modelpress"'
    assert response.json()["detail"].startswith("Authentication required")


def test_it_refuses_a_revoked_or_made_up_token(client):
    response = client.get(SCHEMA, headers={"Authorization": "Bearer mp_not-a-token"})

    assert response.status_code == 401


def test_it_serves_both_to_a_signed_in_user(client, viewer):
    client.force_login(viewer.user)

    assert client.get(DOCS).status_code == 200
    assert client.get(SCHEMA).json()["info"]["title"] == "ModelPress API"


def test_it_serves_the_schema_to_a_token(client, viewer, token_for):
    response = client.get(SCHEMA, headers={"Authorization": f"Bearer {token_for(viewer)}"})

    assert response.status_code == 200
    assert "/api/v1/projects" in response.json()["paths"]
