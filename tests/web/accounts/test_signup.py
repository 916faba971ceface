from __future__ import annotations

import pytest
from django.urls import reverse

from accounts.models import Membership, User

pytestmark = pytest.mark.django_db


def test_it_creates_a_personal_team_owned_by_the_new_user(client):
    response = client.post(
        reverse("accounts-signup"),
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
        },
    )
    assert response.status_code == 302
    user = User.objects.get(username="ada")
    membership = Membership.objects.get(user=user)
    assert membership.role == "owner"
    assert membership.team.is_personal
    # The new user is logged in and lands on the dashboard.
    assert client.get(reverse("web-dashboard")).status_code == 200


def test_it_refuses_a_duplicate_email(client, owner):
    response = client.post(
        reverse("accounts-signup"),
        {
            "username": "someone-else",
            "email": owner.user.email.upper(),
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
        },
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert not User.objects.filter(username="someone-else").exists()


def test_it_sends_anonymous_visitors_to_the_login_page(client):
    response = client.get(reverse("web-dashboard"))
    assert response.status_code == 302
    assert reverse("accounts-login") in response["Location"]


@pytest.mark.parametrize(
    ("next_url", "landing"),
    [("/accounts/teams/", "/accounts/teams/"), ("https://evil.example/", "/dashboard/")],
)
def test_it_follows_only_a_local_next_after_signup(client, next_url, landing):
    response = client.post(
        f"{reverse('accounts-signup')}?next={next_url}",
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
            "next": next_url,
        },
    )
    assert response.status_code == 302 and response["Location"] == landing
