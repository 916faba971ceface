"""Members: change roles, remove, leave; a team always keeps an owner."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from django.urls import reverse

from accounts import teams
from accounts.models import AuditEvent, Membership, Team
from accounts.services import AccountsRejected, create_user_with_personal_team, personal_team
from factories import MembershipFactory

pytestmark = pytest.mark.django_db


def _membership(persona, team) -> Membership:
    return Membership.objects.get(user=persona.user, team=team)


def _role_url(team, membership) -> str:
    return reverse("accounts-member-role", args=[team.uuid, membership.uuid])


def _remove_url(team, membership) -> str:
    return reverse("accounts-member-remove", args=[team.uuid, membership.uuid])


def _messages(client, team) -> str:
    return client.get(reverse("accounts-team", args=[team.uuid])).content.decode()


def test_it_lets_an_admin_promote_a_member_up_to_admin(client, team, admin, member):
    client.force_login(admin.user)
    target = _membership(member, team)
    assert client.post(_role_url(team, target), {"role": "admin"}).status_code == 302
    target.refresh_from_db()
    assert target.role == "admin"
    event = AuditEvent.objects.get(team=team, action="role_changed")
    assert (event.actor, event.target_type, event.target_label) == (
        admin.user,
        "User",
        member.user.username,
    )
    assert event.detail == {"from": "member", "to": "admin"}


def test_it_refuses_an_admin_making_an_owner(client, team, admin, member):
    client.force_login(admin.user)
    target = _membership(member, team)
    response = client.post(_role_url(team, target), {"role": "owner"})
    assert response.status_code == 403
    assert "Only an owner can make someone an owner" in response.content.decode()
    target.refresh_from_db()
    assert target.role == "member"


def test_it_refuses_an_admin_demoting_an_owner(client, team, owner, admin):
    client.force_login(admin.user)
    response = client.post(_role_url(team, _membership(owner, team)), {"role": "viewer"})
    assert response.status_code == 403
    assert _membership(owner, team).role == "owner"


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_it_refuses_members_and_viewers_managing_members(client, team, viewer, persona, request):
    client.force_login(request.getfixturevalue(persona).user)
    other = MembershipFactory(team=team, role="member")
    assert client.post(_role_url(team, other), {"role": "viewer"}).status_code == 403
    assert client.post(_remove_url(team, other)).status_code == 403
    other.refresh_from_db()
    assert other.role == "member"


def test_it_lets_an_owner_make_another_owner_and_then_step_down(client, team, owner, admin):
    client.force_login(owner.user)
    client.post(_role_url(team, _membership(admin, team)), {"role": "owner"})
    assert _membership(admin, team).role == "owner"
    client.post(_role_url(team, _membership(owner, team)), {"role": "member"})
    assert _membership(owner, team).role == "member"


def test_it_refuses_demoting_the_last_owner(client, team, owner):
    client.force_login(owner.user)
    client.post(_role_url(team, _membership(owner, team)), {"role": "admin"})
    assert _membership(owner, team).role == "owner"
    assert "must keep at least one owner" in _messages(client, team)
    assert not AuditEvent.objects.filter(action="role_changed").exists()


def test_it_refuses_an_unknown_role(client, team, owner, member):
    client.force_login(owner.user)
    client.post(_role_url(team, _membership(member, team)), {"role": "god"})
    assert _membership(member, team).role == "member"
    assert "Choose one of the roles" in _messages(client, team)


def test_it_lets_an_admin_remove_a_member_but_not_an_owner(client, team, owner, admin, viewer):
    client.force_login(admin.user)
    assert client.post(_remove_url(team, _membership(viewer, team))).status_code == 302
    assert not Membership.objects.filter(team=team, user=viewer.user).exists()
    event = AuditEvent.objects.get(team=team, action="member_removed")
    assert event.target_label == viewer.user.username and event.detail == {"role": "viewer"}
    assert client.post(_remove_url(team, _membership(owner, team))).status_code == 403
    assert Membership.objects.filter(team=team, user=owner.user).exists()


def test_it_sends_self_removal_to_leave(client, team, owner, admin):
    client.force_login(admin.user)
    client.post(_remove_url(team, _membership(admin, team)))
    assert Membership.objects.filter(team=team, user=admin.user).exists()
    assert "use “Leave team”" in _messages(client, team)


def test_it_lets_a_member_leave(client, team, owner, member):
    client.force_login(member.user)
    response = client.post(reverse("accounts-team-leave", args=[team.uuid]))
    assert response.status_code == 302 and response["Location"] == reverse("accounts-teams")
    assert not Membership.objects.filter(team=team, user=member.user).exists()
    assert AuditEvent.objects.get(team=team, action="member_left").actor == member.user
    # Gone means gone: the team page is now a 404.
    assert client.get(reverse("accounts-team", args=[team.uuid])).status_code == 404


def test_it_refuses_the_last_owner_leaving(client, team, owner, member):
    client.force_login(owner.user)
    client.post(reverse("accounts-team-leave", args=[team.uuid]))
    assert Membership.objects.filter(team=team, user=owner.user, role="owner").exists()
    assert "must keep at least one owner" in _messages(client, team)


def test_it_refuses_leaving_your_personal_team(client):
    user = create_user_with_personal_team(username="solo", email="solo@example.com", password="x")
    team = personal_team(user)
    client.force_login(user)
    client.post(reverse("accounts-team-leave", args=[team.uuid]))
    assert Membership.objects.filter(team=team, user=user).exists()
    assert "cannot leave your personal team" in _messages(client, team)


def test_it_keeps_a_personal_team_to_a_single_owner(client):
    user = create_user_with_personal_team(username="solo", email="solo@example.com", password="x")
    team = personal_team(user)
    guest = MembershipFactory(team=team, role="member")
    client.force_login(user)
    client.post(_role_url(team, guest), {"role": "owner"})
    guest.refresh_from_db()
    assert guest.role == "member"
    assert "personal team has a single owner" in _messages(client, team)
    # The user stays the only owner, so personal_team() keeps resolving to one team.
    assert personal_team(user) == team


def test_it_404s_a_member_of_another_team(client, team, owner, outsider):
    foreign = outsider.user.memberships.get()
    client.force_login(owner.user)
    # The member exists, but not in this team: the URL leads nowhere.
    assert client.post(_role_url(team, foreign), {"role": "viewer"}).status_code == 404
    assert client.post(_remove_url(team, foreign)).status_code == 404


@pytest.mark.django_db(transaction=True)
def test_it_serialises_owner_changes_so_one_owner_always_remains(team):
    """Two owners each stepping down at once: the second waits for the first's lock and then
    sees it is the last owner."""
    first = MembershipFactory(team=team, role="owner")
    second = MembershipFactory(team=team, role="owner")
    outcome: dict[str, object] = {}

    def second_leaves() -> None:
        try:
            teams.leave_team(team=team, user=second.user)
            outcome["result"] = "left"
        except AccountsRejected as exc:
            outcome["result"] = exc
        finally:
            connection.close()

    with transaction.atomic():
        # The first owner's change holds the team lock while the second one arrives.
        Team.objects.select_for_update().get(pk=team.pk)
        thread = threading.Thread(target=second_leaves)
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive(), "leave_team did not wait for the team lock"
        Membership.objects.filter(pk=first.pk).update(role="member")
    thread.join(timeout=30)
    assert isinstance(outcome["result"], AccountsRejected)
    assert Membership.objects.filter(team=team, role="owner").get() == second
