"""Walks every URL pattern that names an object as a user of another team: always 404."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from jobs.models import Artifact, Job

pytestmark = pytest.mark.django_db


def _named_patterns(resolvers, prefix=""):
    for entry in resolvers:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin":
                continue
            yield from _named_patterns(entry.url_patterns, prefix)
        elif isinstance(entry, URLPattern) and entry.name:
            yield entry


@pytest.fixture
def team_objects(model_version, owner, fast_recipe):
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
    return {
        "project_uuid": model_version.project.uuid,
        "version_uuid": model_version.uuid,
        "job_uuid": job.uuid,
        "artifact_uuid": artifact.uuid,
    }


def test_it_hides_every_team_object_from_an_outsider(client, outsider, team_objects):
    client.force_login(outsider.user)
    checked = []
    for pattern in _named_patterns(get_resolver().url_patterns):
        params = list(pattern.pattern.converters)
        if not params:
            continue
        url = reverse(pattern.name, kwargs={name: team_objects[name] for name in params})
        statuses = {
            method.__name__: method(url).status_code for method in (client.get, client.post)
        }
        # 405 (wrong method) is answered before any lookup, so it reveals nothing; every
        # route must answer 404 to the method it serves.
        assert set(statuses.values()) <= {404, 405} and 404 in statuses.values(), (url, statuses)
        checked.append(pattern.name)
    # Guard against the walk silently covering nothing.
    assert {"registry-project", "jobs-detail", "jobs-artifact", "jobs-report"} <= set(checked)


def test_it_lets_a_team_member_download_what_an_outsider_cannot(
    client, member, outsider, team_objects
):
    url = reverse("jobs-artifact", args=[team_objects["artifact_uuid"]])
    client.force_login(member.user)
    response = client.get(url)
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"abc"
    client.force_login(outsider.user)
    assert client.get(url).status_code == 404
