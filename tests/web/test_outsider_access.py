"""Walks every URL pattern that names an object as a user of another team: always 404."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from accounts.models import Invite, Membership, hash_invite_token
from accounts.tokens import create_token
from jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


def _named_patterns(resolvers, namespace=""):
    """(pattern, name to reverse it by, with its namespaces) for every named pattern."""
    for entry in resolvers:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                continue
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _named_patterns(entry.url_patterns, inner)
        elif isinstance(entry, URLPattern) and entry.name:
            yield entry, namespace + entry.name


@pytest.fixture
def team_objects(model_version, owner, fast_recipe, dataset):
    job = Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=fast_recipe,
        created_by=owner.user,
    )
    job.claim(worker="w")
    job.succeed({"not": "rendered"})
    artifact = Artifact(job=job, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    team = model_version.project.team
    invite = Invite.objects.create(
        team=team,
        email="invited@example.com",
        token_hash=hash_invite_token("the-emailed-token"),
        expires_at=timezone.now() + timedelta(days=1),
    )
    token = create_token(user=owner.user, name="owner's").token
    return {
        "token_uuid": token.uuid,
        "project_uuid": model_version.project.uuid,
        "version_uuid": model_version.uuid,
        "dataset_uuid": dataset.uuid,
        "index": 0,  # a dataset's first preview thumbnail
        "job_uuid": job.uuid,
        "artifact_uuid": artifact.uuid,
        "team_uuid": team.uuid,
        "member_uuid": Membership.objects.get(team=team, user=owner.user).uuid,
        "invite_uuid": invite.uuid,
        # An invite link is its own credential (anyone holding it may join); without the
        # e-mailed token an outsider only has guesses, which must lead nowhere.
        "invite_token": "a-guessed-token",
        "uidb64": urlsafe_base64_encode(force_bytes(owner.user.pk)),
        "token": "a-guessed-reset-token",
    }


def test_it_hides_every_team_object_from_an_outsider(client, outsider, team_objects):
    client.force_login(outsider.user)
    checked = []
    for pattern, name in _named_patterns(get_resolver().url_patterns):
        params = list(pattern.pattern.converters)
        if not params:
            continue
        url = reverse(name, kwargs={key: team_objects[key] for key in params})
        statuses = {"get": client.get(url).status_code}
        if name.startswith("api-v1:"):  # the API reads JSON bodies
            statuses["post"] = client.post(url, {}, content_type="application/json").status_code
            statuses["delete"] = client.delete(url).status_code
        else:
            statuses["post"] = client.post(url).status_code
        # 405 (wrong method) and the API's 422 (a request body missing) are answered before
        # any lookup, so they reveal nothing; every route must answer 404 to the method it
        # serves.
        assert set(statuses.values()) <= {404, 405, 422} and 404 in statuses.values(), (
            url,
            statuses,
        )
        checked.append(name)
    # Guard against the walk silently covering nothing.
    assert {"registry-project", "jobs-detail", "jobs-artifact", "jobs-report"} <= set(checked)
    assert {"accounts-token-revoke", "api-v1:get_job", "api-v1:download_artifact"} <= set(checked)
    assert {
        "registry-project-delete",
        "registry-model-version-delete",
        "registry-dataset-delete",
        "jobs-delete",
        "api-v1:delete_dataset_route",
    } <= set(checked)
    assert {
        "accounts-team",
        "accounts-team-audit",
        "accounts-member-role",
        "accounts-invite-revoke",
        "accounts-invite",
        "accounts-invite-accept",
        "accounts-password-reset-confirm",
    } <= set(checked)


def test_it_lets_a_team_member_download_what_an_outsider_cannot(
    client, member, outsider, team_objects
):
    url = reverse("jobs-artifact", args=[team_objects["artifact_uuid"]])
    client.force_login(member.user)
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"abc"
    client.force_login(outsider.user)
    assert client.get(url).status_code == 404
