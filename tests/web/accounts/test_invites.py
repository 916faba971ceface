"""Invitations: create (admins), e-mail, accept once, expiry, revoke, hashed tokens."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent, Invite, Membership
from factories import UserFactory

pytestmark = pytest.mark.django_db

LINK_RE = re.compile(r"https?://testserver(/accounts/invites/([^/\s]+)/)")


def _invite(client, team, inviter, email="new@example.com", role="member") -> tuple[str, str]:
    """Invite through the page as `inviter`; returns (invite page path, raw token)."""
    client.force_login(inviter)
    response = client.post(
        reverse("accounts-invite-create", args=[team.uuid]), {"email": email, "role": role}
    )
    assert response.status_code == 302, response.content.decode()
    match = LINK_RE.search(mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1), match.group(2)


def test_it_emails_an_invite_and_stores_only_the_token_hash(client, team, admin):
    _, token = _invite(client, team, admin.user, email="New@Example.com", role="viewer")
    message = mail.outbox[-1]
    assert message.to == ["new@example.com"]
    assert team.name in message.subject and "viewer" in message.body
    invite = Invite.objects.get(team=team)
    assert (invite.email, invite.role, invite.invited_by) == (
        "new@example.com",
        "viewer",
        admin.user,
    )
    assert invite.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Invite.objects.filter(pk=invite.pk).values().get())
    hours = (invite.expires_at - invite.created_at).total_seconds() / 3600
    assert round(hours) == 72
    event = AuditEvent.objects.get(team=team, action="invited")
    assert event.detail["email"] == "new@example.com" and event.target_type == "Invite"
    # The pending invite is listed for admins.
    page = client.get(reverse("accounts-team", args=[team.uuid])).content.decode()
    assert "new@example.com" in page and "Revoke" in page


def test_it_uses_the_configured_invite_lifetime(client, team, admin, settings):
    settings.MODELPRESS_INVITE_TTL_HOURS = 5
    _invite(client, team, admin.user)
    invite = Invite.objects.get(team=team)
    assert round((invite.expires_at - invite.created_at).total_seconds() / 3600) == 5


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_it_refuses_invites_from_members_and_viewers(client, team, persona, request):
    client.force_login(request.getfixturevalue(persona).user)
    response = client.post(
        reverse("accounts-invite-create", args=[team.uuid]), {"email": "x@example.com"}
    )
    assert response.status_code == 403
    assert not Invite.objects.exists() and not mail.outbox


def test_it_offers_admins_no_owner_role_in_invites(client, team, admin):
    client.force_login(admin.user)
    response = client.post(
        reverse("accounts-invite-create", args=[team.uuid]),
        {"email": "x@example.com", "role": "owner"},
    )
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    assert not Invite.objects.exists()


def test_it_refuses_inviting_an_existing_member(client, team, admin, member):
    client.force_login(admin.user)
    response = client.post(
        reverse("accounts-invite-create", args=[team.uuid]),
        {"email": member.user.email.upper(), "role": "admin"},
    )
    assert response.status_code == 422
    assert "already a member" in response.content.decode()
    assert not Invite.objects.exists() and not mail.outbox


def test_it_replaces_a_pending_invite_to_the_same_address(client, team, admin):
    first_path, _ = _invite(client, team, admin.user)
    second_path, _ = _invite(client, team, admin.user, role="admin")
    assert client.get(first_path).status_code == 410
    assert client.get(second_path).status_code == 200
    assert Invite.objects.pending().get().role == "admin"


def test_it_rolls_back_an_invite_whose_email_fails(client, team, admin, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    client.force_login(admin.user)
    response = client.post(
        reverse("accounts-invite-create", args=[team.uuid]),
        {"email": "x@example.com", "role": "member"},
    )
    assert response.status_code == 422
    assert "could not be sent" in response.content.decode()
    assert not Invite.objects.exists()
    assert not AuditEvent.objects.filter(action="invited").exists()


def test_it_shows_the_invite_to_a_visitor_and_brings_them_back_after_signup(client, team, admin):
    path, _ = _invite(client, team, admin.user, role="viewer")
    client.logout()
    page = client.get(path)
    body = page.content.decode()
    assert page.status_code == 200
    # The address only masked: the link may have reached someone else.
    assert team.name in body and "viewer" in body and "n…@example.com" in body
    assert "new@example.com" not in body
    assert f"next={path.replace('/', '%2F')}" in body
    signup = client.post(
        f"{reverse('accounts-signup')}?next={path}",
        {
            "username": "newbie",
            "email": "newbie@example.com",
            "password1": "a-long-unusual-passphrase",
            "password2": "a-long-unusual-passphrase",
            "next": path,
        },
    )
    assert signup.status_code == 302 and signup["Location"] == path
    body = client.get(path).content.decode()
    # Logged in with another address than the invited one: refused, with the way out.
    assert (
        "This invite is for n…@example.com; you are signed in as newbie@example.com. Sign out "
        "and sign in or sign up with the invited address."
    ) in body
    assert "Join as newbie" not in body and "Sign out" in body


def test_it_sends_a_logged_out_accept_to_the_login_page(client, team, admin):
    path, token = _invite(client, team, admin.user)
    client.logout()
    response = client.post(reverse("accounts-invite-accept", args=[token]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts-login"))
    assert path.replace("/", "%2F") in response["Location"]
    assert not Invite.objects.get().accepted_at


def test_it_comes_back_to_the_invite_after_login(client, team, admin):
    path, _ = _invite(client, team, admin.user)
    client.logout()
    joiner = UserFactory()
    response = client.post(
        reverse("accounts-login"),
        {"username": joiner.username, "password": "pw-for-tests-1", "next": path},
    )
    assert response.status_code == 302 and response["Location"] == path


def test_it_accepts_an_invite_once(client, team, admin):
    path, token = _invite(client, team, admin.user, role="admin")
    joiner = UserFactory(email="New@Example.com")  # the invited address, in other letters
    client.force_login(joiner)
    response = client.post(reverse("accounts-invite-accept", args=[token]))
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts-team", args=[team.uuid])
    assert Membership.objects.get(team=team, user=joiner).role == "admin"
    invite = Invite.objects.get()
    assert invite.accepted_by == joiner and invite.accepted_at is not None
    event = AuditEvent.objects.get(team=team, action="invite_accepted")
    assert event.actor == joiner and event.detail == {"email": "new@example.com", "role": "admin"}

    # Used: the page and a second accept, by anyone, say so with 410.
    other = UserFactory(email="other@example.com")
    client.force_login(other)
    page = client.get(path)
    assert page.status_code == 410 and "already been used" in page.content.decode()
    again = client.post(reverse("accounts-invite-accept", args=[token]))
    assert again.status_code == 410
    assert not Membership.objects.filter(team=team, user=other).exists()


def test_it_does_not_duplicate_a_membership(client, team, admin, viewer):
    _, token = _invite(client, team, admin.user)
    client.force_login(viewer.user)
    response = client.post(reverse("accounts-invite-accept", args=[token]), follow=True)
    assert "already a member" in response.content.decode()
    assert Membership.objects.get(team=team, user=viewer.user).role == "viewer"
    # Not consumed: the addressee can still use it.
    assert Invite.objects.pending().count() == 1


def test_it_refuses_an_expired_invite(client, team, admin):
    path, token = _invite(client, team, admin.user)
    Invite.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    client.force_login(UserFactory())
    page = client.get(path)
    assert page.status_code == 410 and "expired" in page.content.decode()
    assert client.post(reverse("accounts-invite-accept", args=[token])).status_code == 410
    assert Membership.objects.filter(team=team).count() == 1
    # Expired invites are no longer listed as pending.
    client.force_login(admin.user)
    team_page = client.get(reverse("accounts-team", args=[team.uuid])).content.decode()
    assert "No pending invitations" in team_page


def test_it_revokes_an_invite(client, team, admin):
    path, token = _invite(client, team, admin.user)
    invite = Invite.objects.get()
    response = client.post(reverse("accounts-invite-revoke", args=[team.uuid, invite.uuid]))
    assert response.status_code == 302
    invite.refresh_from_db()
    assert invite.revoked_at is not None
    assert AuditEvent.objects.get(team=team, action="invite_revoked").target_id == str(invite.uuid)
    client.force_login(UserFactory())
    page = client.get(path)
    assert page.status_code == 410 and "withdrawn" in page.content.decode()
    assert client.post(reverse("accounts-invite-accept", args=[token])).status_code == 410


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_it_lets_only_admins_revoke(client, team, admin, persona, request):
    _invite(client, team, admin.user)
    invite = Invite.objects.get()
    client.force_login(request.getfixturevalue(persona).user)
    response = client.post(reverse("accounts-invite-revoke", args=[team.uuid, invite.uuid]))
    assert response.status_code == 403
    invite.refresh_from_db()
    assert invite.revoked_at is None


def test_it_answers_an_unknown_token_with_a_clear_404(client):
    response = client.get(reverse("accounts-invite", args=["not-a-real-token"]))
    assert response.status_code == 404
    assert "not valid" in response.content.decode()
    client.force_login(UserFactory())
    assert client.post(reverse("accounts-invite-accept", args=["nope"])).status_code == 404


def test_it_refuses_an_account_with_another_address(client, team, admin):
    path, token = _invite(client, team, admin.user, email="alice@example.com")
    bob = UserFactory(username="bob", email="bob@example.com")
    client.force_login(bob)

    page = client.get(path)
    response = client.post(reverse("accounts-invite-accept", args=[token]))

    message = (
        "This invite is for a…@example.com; you are signed in as bob@example.com. Sign out and "
        "sign in or sign up with the invited address."
    )
    assert message in page.content.decode() and "Join as bob" not in page.content.decode()
    assert 'data-testid="invite-address">a…@example.com<' in page.content.decode()
    assert response.status_code == 403 and message in response.content.decode()
    assert not Membership.objects.filter(team=team, user=bob).exists()
    assert not AuditEvent.objects.filter(action="invite_accepted").exists()
    # Not consumed: Alice can still join with it.
    assert Invite.objects.pending().count() == 1
    alice = UserFactory(username="alice", email="ALICE@example.com")
    client.force_login(alice)
    assert 'data-testid="invite-address">alice@example.com<' in client.get(path).content.decode()
    accepted = client.post(reverse("accounts-invite-accept", args=[token]))
    assert accepted.status_code == 302
    assert Membership.objects.get(team=team, user=alice).role == "member"


def test_signing_out_from_a_refused_invite_comes_back_to_it(client, team, admin):
    path, _ = _invite(client, team, admin.user, email="alice@example.com")
    client.force_login(UserFactory(email="bob@example.com"))
    response = client.post(reverse("accounts-logout"), {"next": path})
    assert response.status_code == 302 and response["Location"] == path
    assert "Log in" in client.get(path).content.decode()
