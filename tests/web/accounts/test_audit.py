"""The audit log: `record()` for any app, and the team's audit page (admins and owners)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.models import AuditEvent
from factories import AuditEventFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_it_records_a_target_by_type_public_id_and_label(team, owner, project):
    request = RequestFactory().post("/", REMOTE_ADDR="203.0.113.9")
    event = audit.record(
        team=team,
        actor=owner.user,
        action=AuditEvent.Action.DELETED,
        target=project,
        detail={"why": "cleanup"},
        request=request,
    )
    assert (event.target_type, event.target_id, event.target_label) == (
        "Project",
        str(project.uuid),
        project.name,
    )
    assert event.actor_label == owner.user.username and event.ip_address == "203.0.113.9"
    assert event.detail == {"why": "cleanup"}


def test_it_keeps_the_labels_after_the_actor_and_target_are_gone(team, project):
    actor = UserFactory(username="leaver")
    event = audit.record(team=team, actor=actor, action="deleted", target=project)
    actor.delete()
    project.delete()
    event.refresh_from_db()
    assert event.actor is None and event.actor_label == "leaver"
    assert event.target_label == project.name


def test_it_falls_back_to_the_pk_for_targets_without_a_uuid(team, owner):
    event = audit.record(team=team, actor=owner.user, action="role_changed", target=owner.user)
    assert (event.target_type, event.target_id) == ("User", str(owner.user.pk))


def test_it_rejects_an_unknown_action(team, owner):
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.record(team=team, actor=owner.user, action="took_coffee")


def test_it_records_system_events_without_an_actor(team):
    event = audit.record(team=team, actor=None, action="cancelled_job")
    assert event.actor is None and event.actor_label == "" and event.ip_address is None


@pytest.mark.parametrize("persona", ["owner", "admin"])
def test_it_shows_the_audit_log_to_owners_and_admins(client, team, persona, request):
    user = request.getfixturevalue(persona).user
    AuditEventFactory(team=team, actor=user, action="uploaded_model", target_label="resnet v1")
    client.force_login(user)
    response = client.get(reverse("accounts-team-audit", args=[team.uuid]))
    assert response.status_code == 200
    assert "resnet v1" in response.content.decode()


@pytest.mark.parametrize("persona", ["member", "viewer"])
def test_it_refuses_the_audit_log_to_members_and_viewers(client, team, persona, request):
    client.force_login(request.getfixturevalue(persona).user)
    response = client.get(reverse("accounts-team-audit", args=[team.uuid]))
    assert response.status_code == 403
    assert "admin or higher" in response.content.decode()


def test_it_hides_the_audit_log_from_outsiders(client, team, owner, outsider):
    AuditEventFactory(team=team, actor=owner.user)
    client.force_login(outsider.user)
    assert client.get(reverse("accounts-team-audit", args=[team.uuid])).status_code == 404


def test_it_lists_newest_first_in_pages_of_fifty(client, team, owner):
    start = timezone.now() - timedelta(days=1)
    for i in range(51):
        AuditEventFactory(
            team=team, actor=owner.user, target_label=f"item-{i:02d}",
            created_at=start + timedelta(minutes=i),
        )  # fmt: skip
    client.force_login(owner.user)
    url = reverse("accounts-team-audit", args=[team.uuid])
    first = client.get(url).content.decode()
    assert "item-50" in first and "item-01" in first and "item-00" not in first
    assert first.index("item-50") < first.index("item-49")
    second = client.get(url, {"page": 2}).content.decode()
    assert "item-00" in second and "item-01" not in second


def test_it_filters_by_action_and_actor(client, team, owner, admin):
    AuditEventFactory(team=team, actor=owner.user, action="uploaded_model", target_label="event-a1")
    AuditEventFactory(team=team, actor=admin.user, action="uploaded_model", target_label="event-b1")
    AuditEventFactory(team=team, actor=admin.user, action="started_job", target_label="event-b2")
    client.force_login(owner.user)
    url = reverse("accounts-team-audit", args=[team.uuid])

    body = client.get(url, {"action": "uploaded_model"}).content.decode()
    assert "event-a1" in body and "event-b1" in body and "event-b2" not in body
    body = client.get(url, {"actor": admin.user.username}).content.decode()
    assert "event-a1" not in body and "event-b1" in body and "event-b2" in body
    body = client.get(url, {"actor": admin.user.username, "action": "started_job"}).content
    assert b"event-b2" in body and b"event-b1" not in body
    # Page links keep the filters.
    AuditEventFactory.create_batch(60, team=team, actor=admin.user, action="started_job")
    body = client.get(url, {"action": "started_job"}).content.decode()
    assert "action=started_job&amp;page=2" in body


def test_it_never_shows_another_teams_events(client, team, owner, outsider):
    other_team = outsider.user.memberships.get().team
    AuditEventFactory(team=other_team, actor=outsider.user, target_label="secret-model")
    client.force_login(owner.user)
    body = client.get(reverse("accounts-team-audit", args=[team.uuid])).content.decode()
    assert "secret-model" not in body and f">{outsider.user.username}<" not in body
