"""Team pages: list, create, detail, rename, delete."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.models import AuditEvent, Membership, Team
from conftest import storage_files
from jobs.models import Artifact, Job
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def test_it_lists_only_the_users_teams_with_their_role(client, owner, viewer, outsider):
    client.force_login(viewer.user)
    response = client.get(reverse("accounts-teams"))
    assert response.status_code == 200
    body = response.content.decode()
    assert f">{owner.user.memberships.get().team.name}<" in body
    assert f">{outsider.user.memberships.get().team.name}<" not in body


def test_it_creates_a_team_owned_by_its_creator(client, member):
    client.force_login(member.user)
    response = client.post(reverse("accounts-team-create"), {"name": "  Vision  "})
    team = Team.objects.get(name="Vision")
    assert response.status_code == 302
    assert response["Location"] == reverse("accounts-team", args=[team.uuid])
    assert not team.is_personal
    assert Membership.objects.get(team=team).role == "owner"
    event = AuditEvent.objects.get(team=team)
    assert (event.action, event.actor, event.target_label) == (
        "team_created",
        member.user,
        "Vision",
    )


def test_it_refuses_a_team_without_a_name(client, member):
    client.force_login(member.user)
    response = client.post(reverse("accounts-team-create"), {"name": ""})
    assert response.status_code == 422
    assert "This field is required" in response.content.decode()


@pytest.mark.parametrize("persona", ["owner", "admin", "member", "viewer"])
def test_it_shows_the_team_page_to_every_member(client, team, persona, request):
    user = request.getfixturevalue(persona).user
    client.force_login(user)
    response = client.get(reverse("accounts-team", args=[team.uuid]))
    assert response.status_code == 200
    body = response.content.decode()
    assert user.username in body and "Storage:" in body
    # Only admins and owners see the management forms.
    assert ("Send invitation" in body) == (persona in {"owner", "admin"})
    assert ("Delete team" in body) == (persona == "owner")


def test_it_hides_the_team_page_from_outsiders_and_visitors(client, team, owner, outsider):
    url = reverse("accounts-team", args=[team.uuid])
    assert client.get(url).status_code == 302
    client.force_login(outsider.user)
    assert client.get(url).status_code == 404


def test_it_lets_only_the_owner_rename_the_team(client, team, owner, admin):
    old_name = team.name
    url = reverse("accounts-team-rename", args=[team.uuid])
    client.force_login(admin.user)
    response = client.post(url, {"name": "Admins rule"})
    assert response.status_code == 403
    assert "owner" in response.content.decode()
    client.force_login(owner.user)
    assert client.post(url, {"name": "Renamed"}).status_code == 302
    team.refresh_from_db()
    assert team.name == "Renamed"
    event = AuditEvent.objects.get(team=team, action="team_renamed")
    assert event.detail == {"from": old_name, "to": "Renamed"}


def test_it_deletes_a_team_with_its_rows_and_files(
    client, team, owner, model_version, dataset, django_capture_on_commit_callbacks
):
    job = Job.objects.create(
        team=team,
        project=model_version.project,
        model_version=model_version,
        dataset=dataset,
        recipe={},
        created_by=owner.user,
    )
    job.claim(worker="w")
    job.succeed({})
    artifact = Artifact(job=job, name="m.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("m.onnx", ContentFile(b"abc"))
    stored = {model_version.file.name, dataset.file.name, artifact.file.name}
    assert stored <= set(storage_files())

    client.force_login(owner.user)
    url = reverse("accounts-team-delete", args=[team.uuid])
    # A wrong confirmation deletes nothing.
    client.post(url, {"confirm_name": "nope"})
    assert Team.objects.filter(pk=team.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"confirm_name": team.name})
    assert response.status_code == 302 and response["Location"] == reverse("accounts-teams")
    assert not Team.objects.filter(pk=team.pk).exists()
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not stored & set(storage_files())


def test_it_refuses_to_delete_a_team_with_a_running_job(client, team, owner, model_version):
    job = Job.objects.create(
        team=team,
        project=model_version.project,
        model_version=model_version,
        recipe={},
        created_by=owner.user,
    )
    job.claim(worker="w")
    client.force_login(owner.user)
    client.post(reverse("accounts-team-delete", args=[team.uuid]), {"confirm_name": team.name})
    assert Team.objects.filter(pk=team.pk).exists()
    page = client.get(reverse("accounts-team", args=[team.uuid])).content.decode()
    assert "1 job(s) queued or running" in page


def test_it_never_deletes_a_personal_team(client):
    from accounts.services import create_user_with_personal_team, personal_team

    user = create_user_with_personal_team(username="solo", email="solo@example.com", password="x")
    team = personal_team(user)
    client.force_login(user)
    client.post(reverse("accounts-team-delete", args=[team.uuid]), {"confirm_name": team.name})
    assert Team.objects.filter(pk=team.pk).exists()


@pytest.mark.parametrize("persona", ["admin", "member", "viewer"])
def test_it_lets_only_owners_delete(client, team, owner, persona, request):
    client.force_login(request.getfixturevalue(persona).user)
    response = client.post(
        reverse("accounts-team-delete", args=[team.uuid]), {"confirm_name": team.name}
    )
    assert response.status_code == 403
    assert Team.objects.filter(pk=team.pk).exists()


def _converted_version(model_version, status: str) -> ModelVersion:
    version = ModelVersion.objects.create(
        project=model_version.project, name="ts", version=1, original_filename="net.pt",
        source_format="torchscript", status=status, source_size_bytes=3, sha256="0",
    )  # fmt: skip
    version.source_file.save("source.pt", ContentFile(b"abc"))
    return version


def test_it_removes_the_kept_source_files_with_the_team(
    client, team, owner, model_version, django_capture_on_commit_callbacks
):
    version = _converted_version(model_version, ModelVersion.Status.READY)
    assert version.source_file.name in storage_files()
    client.force_login(owner.user)

    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("accounts-team-delete", args=[team.uuid]), {"confirm_name": team.name})

    assert not Team.objects.filter(pk=team.pk).exists()
    assert version.source_file.name not in storage_files()


def test_it_refuses_to_delete_a_team_while_an_upload_converts(client, team, owner, model_version):
    _converted_version(model_version, ModelVersion.Status.CONVERTING)
    client.force_login(owner.user)

    client.post(reverse("accounts-team-delete", args=[team.uuid]), {"confirm_name": team.name})

    assert Team.objects.filter(pk=team.pk).exists()
    page = client.get(reverse("accounts-team", args=[team.uuid])).content.decode()
    assert "1 model upload(s) still converting" in page
