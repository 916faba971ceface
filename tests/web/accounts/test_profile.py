"""Profile page, password change, password reset by e-mail, logout."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.urls import reverse

from factories import UserFactory

pytestmark = pytest.mark.django_db

RESET_LINK_RE = re.compile(r"https?://testserver(/accounts/password/reset/[^\s]+/)")


def test_it_shows_and_saves_the_profile(client, member):
    client.force_login(member.user)
    url = reverse("accounts-profile")
    assert member.user.email in client.get(url).content.decode()
    response = client.post(
        url, {"first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com"}
    )
    assert response.status_code == 302
    member.user.refresh_from_db()
    assert (member.user.first_name, member.user.last_name, member.user.email) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
    )


def test_it_keeps_e_mail_addresses_unique(client, member, owner):
    client.force_login(member.user)
    response = client.post(
        reverse("accounts-profile"),
        {"first_name": "", "last_name": "", "email": owner.user.email.upper()},
    )
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    member.user.refresh_from_db()
    assert member.user.email != owner.user.email
    # Keeping your own address is not a clash.
    response = client.post(
        reverse("accounts-profile"),
        {"first_name": "M", "last_name": "", "email": member.user.email},
    )
    assert response.status_code == 302


def test_it_sends_visitors_to_log_in_for_the_profile(client):
    response = client.get(reverse("accounts-profile"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts-login"))


def test_it_changes_the_password_and_keeps_the_session(client, member):
    client.force_login(member.user)
    url = reverse("accounts-password-change")
    wrong = client.post(
        url,
        {
            "old_password": "wrong",
            "new_password1": "another-long-passphrase",
            "new_password2": "another-long-passphrase",
        },
    )
    assert wrong.status_code == 200 and "incorrectly" in wrong.content.decode()
    response = client.post(
        url,
        {
            "old_password": "pw-for-tests-1",
            "new_password1": "another-long-passphrase",
            "new_password2": "another-long-passphrase",
        },
    )
    assert response.status_code == 302
    member.user.refresh_from_db()
    assert member.user.check_password("another-long-passphrase")
    # Still logged in after the session hash changed.
    assert client.get(reverse("accounts-profile")).status_code == 200


def test_it_resets_a_forgotten_password_by_e_mail(client):
    user = UserFactory(email="forgetful@example.com")
    response = client.post(reverse("accounts-password-reset"), {"email": "Forgetful@Example.com"})
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts-password-reset-done")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["forgetful@example.com"]
    link = RESET_LINK_RE.search(mail.outbox[0].body).group(1)

    # Django swaps the token for a session marker and redirects to the form.
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and "Choose a new password" in form_page.content.decode()
    done = client.post(
        form_page.redirect_chain[-1][0],
        {"new_password1": "a-fresh-long-passphrase", "new_password2": "a-fresh-long-passphrase"},
    )
    assert done.status_code == 302
    assert done["Location"] == reverse("accounts-password-reset-complete")
    user.refresh_from_db()
    assert user.check_password("a-fresh-long-passphrase")

    # The link works once.
    again = client.get(link, follow=True)
    assert again.status_code == 404 and "does not work" in again.content.decode()


def test_it_says_the_same_for_an_unknown_address(client):
    response = client.post(reverse("accounts-password-reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts-password-reset-done")
    assert mail.outbox == []


def test_it_logs_out_only_by_post(client, member):
    client.force_login(member.user)
    assert client.get(reverse("accounts-logout")).status_code == 405
    assert client.get(reverse("accounts-profile")).status_code == 200
    assert client.post(reverse("accounts-logout")).status_code == 302
    assert client.get(reverse("accounts-profile")).status_code == 302


def test_it_links_profile_and_teams_in_the_navigation(client, member):
    client.force_login(member.user)
    body = client.get(reverse("accounts-teams")).content.decode()
    assert f'href="{reverse("accounts-profile")}"' in body
    assert f'href="{reverse("accounts-teams")}"' in body
