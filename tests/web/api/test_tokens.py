"""Personal API tokens: created on the tokens page and shown once, stored as a hash only,
listed, revoked (then refused), and the session alternative with its CSRF check."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken
from accounts.tokens import authenticate_token, create_token, revoke_token
from factories import UserFactory

pytestmark = pytest.mark.django_db


def _me(client, raw: str | None):
    headers = {"Authorization": f"Bearer {raw}"} if raw is not None else {}
    return client.get("/api/v1/me", headers=headers)


def test_it_shows_a_new_token_once_and_stores_only_its_hash(client, owner):
    client.force_login(owner.user)
    response = client.post(reverse("accounts-tokens"), {"name": "laptop CLI"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    raw = response.context["new_token"].raw
    assert raw.startswith("mp_") and raw in response.content.decode()

    token = ApiToken.objects.get(user=owner.user)
    assert token.name == "laptop CLI"
    assert token.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw.startswith(f"mp_{token.prefix}_") and len(token.prefix) == 8
    # Nowhere in the row, in any column: only the hash and the short prefix are kept.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_apitoken WHERE id = %s", [token.pk])
        assert not any(raw in str(value) for value in cursor.fetchone())

    # The list shows the prefix, never the token again.
    page = client.get(reverse("accounts-tokens")).content.decode()
    assert f"mp_{token.prefix}_" in page and raw not in page
    assert _me(client, raw).json()["username"] == owner.user.username


def test_it_links_the_tokens_page_from_the_profile(client, owner):
    client.force_login(owner.user)
    assert reverse("accounts-tokens") in client.get(reverse("accounts-profile")).content.decode()


def test_it_explains_a_token_without_a_name(client, owner):
    client.force_login(owner.user)
    response = client.post(reverse("accounts-tokens"), {"name": "  "})
    assert response.status_code == 422 and response.context["new_token"] is None
    assert not ApiToken.objects.exists()


def test_it_stops_accepting_a_revoked_token(client, owner):
    new = create_token(user=owner.user, name="ci")
    assert _me(Client(), new.raw).status_code == 200
    client.force_login(owner.user)
    response = client.post(reverse("accounts-token-revoke", args=[new.token.uuid]), follow=True)
    assert "revoked" in response.content.decode()
    new.token.refresh_from_db()
    assert new.token.is_revoked
    response = _me(Client(), new.raw)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert "token" in response.json()["detail"]
    assert revoke_token(new.token) is False  # safe to repeat


def test_it_hides_other_users_tokens(client, owner, outsider):
    # A name no page text or generated user name can contain by chance ("ci" could).
    new = create_token(user=owner.user, name="owners-deploy-token-q7")
    client.force_login(outsider.user)
    assert client.post(reverse("accounts-token-revoke", args=[new.token.uuid])).status_code == 404
    assert "owners-deploy-token-q7" not in client.get(reverse("accounts-tokens")).content.decode()
    new.token.refresh_from_db()
    assert not new.token.is_revoked


@pytest.mark.parametrize(
    "header",
    ["Bearer mp_nope_nope", "Bearer ", "Token abc", "Bearer " + "mp_" + "x" * 300, "Basic a:b"],
)
def test_it_answers_401_to_an_unknown_or_malformed_token(client, header):
    response = client.get("/api/v1/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Authentication required")


def test_it_refuses_the_token_of_a_deactivated_user(client, owner):
    raw = create_token(user=owner.user, name="ci").raw
    owner.user.is_active = False
    owner.user.save(update_fields=["is_active"])
    assert _me(client, raw).status_code == 401


def test_it_records_last_use_at_most_once_a_minute(owner):
    new = create_token(user=owner.user, name="ci")
    assert authenticate_token(new.raw) == owner.user
    new.token.refresh_from_db()
    first = new.token.last_used_at
    assert first is not None
    assert authenticate_token(new.raw) == owner.user
    new.token.refresh_from_db()
    assert new.token.last_used_at == first  # within the minute: no write
    ApiToken.objects.filter(pk=new.token.pk).update(last_used_at=first - timedelta(minutes=2))
    authenticate_token(new.raw)
    new.token.refresh_from_db()
    assert new.token.last_used_at > first - timedelta(minutes=1)
    assert new.token.last_used_at <= timezone.now()


def test_it_accepts_the_session_but_requires_csrf_for_writes(owner, team):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(owner.user)
    assert browser.get("/api/v1/me").status_code == 200
    response = browser.post(
        "/api/v1/projects",
        {"name": "from the docs page", "team": str(team.uuid)},
        content_type="application/json",
    )
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]

    browser.get(reverse("accounts-tokens"))  # sets the CSRF cookie
    response = browser.post(
        "/api/v1/projects",
        {"name": "from the docs page", "team": str(team.uuid)},
        content_type="application/json",
        headers={"X-CSRFToken": browser.cookies["csrftoken"].value},
    )
    assert response.status_code == 201, response.content


def test_it_needs_no_csrf_token_with_a_bearer_token(owner, team):
    api = Client(enforce_csrf_checks=True)
    raw = create_token(user=owner.user, name="ci").raw
    response = api.post(
        "/api/v1/projects",
        {"name": "scripted", "team": str(team.uuid)},
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw}"},
    )
    assert response.status_code == 201, response.content


def test_it_caps_the_number_of_active_tokens():
    from accounts.services import AccountsRejected
    from accounts.tokens import MAX_ACTIVE_TOKENS

    user = UserFactory()
    for n in range(MAX_ACTIVE_TOKENS):
        create_token(user=user, name=f"t{n}")
    with pytest.raises(AccountsRejected, match="Revoke"):
        create_token(user=user, name="one too many")
