"""Signed short-lived download links: made on the results page (or the API) by someone who
may download the artifact, usable without a session until they expire, and only while the
issuer is still an active member of the artifact's team."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from django.core import signing
from django.core.files.base import ContentFile
from django.urls import reverse

from accounts.models import AuditEvent, Membership
from factories import JobFactory
from jobs.models import Artifact

pytestmark = pytest.mark.django_db


@pytest.fixture
def artifact(model_version, owner):
    job = JobFactory(model_version=model_version, created_by=owner.user)
    job.claim(worker="w")
    job.succeed({"not": "a full report"})
    artifact = Artifact(job=job, name="model.int8.onnx", format="onnx", size_bytes=3, sha256="0")
    artifact.file.save("model.int8.onnx", ContentFile(b"abc"))
    return artifact


def _make_link(client, user, artifact, *, seconds_ago: float = 0) -> str:
    """A link made through the page by `user`, as if `seconds_ago` seconds ago; the client
    is logged out afterwards, like a device that only has the URL."""
    client.force_login(user)
    issued = time.time() - seconds_ago
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(signing, "time", SimpleNamespace(time=lambda: issued))
        response = client.get(reverse("jobs-artifact-link", args=[artifact.uuid]))
    assert response.status_code == 200
    client.logout()
    return response.context["url"]


def _downloads(artifact) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            action=AuditEvent.Action.DOWNLOADED, target_id=str(artifact.uuid)
        ).order_by("id")
    )


def test_it_shows_a_link_that_downloads_the_file_without_logging_in(client, viewer, artifact):
    client.force_login(viewer.user)  # viewers may download, so they may hand out links
    page = client.get(reverse("jobs-artifact-link", args=[artifact.uuid]))
    assert page.status_code == 200 and page["Cache-Control"] == "private, no-store"
    url = page.context["url"]
    assert url.startswith("http://testserver/jobs/links/")
    assert f'value="{url}"' in page.content.decode() and "10 minutes" in page.content.decode()
    client.logout()

    response = client.get(url)

    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"abc"
    assert 'filename="model.int8.onnx"' in response["Content-Disposition"]
    (event,) = _downloads(artifact)
    assert event.actor == viewer.user and event.team == artifact.job.team
    assert event.detail == {
        "file": "model.int8.onnx",
        "job": str(artifact.job.uuid),
        "via": "signed link",
        "link": page.context["link"].link_id,
    }


def test_every_use_is_recorded(client, member, artifact):
    url = _make_link(client, member.user, artifact)
    for _ in range(2):
        assert client.get(url).status_code == 200
    assert len(_downloads(artifact)) == 2


def test_the_results_page_offers_a_link_per_artifact(
    client, owner, model_version, base_report, succeeded_job
):
    job = succeeded_job(model_version, base_report, created_by=owner.user)
    for info in base_report["artifacts"]:
        stored = Artifact(job=job, name=info["name"], format=info["format"], size_bytes=3)
        stored.file.save(info["name"], ContentFile(b"abc"))
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    artifacts = list(job.artifacts.all())
    assert artifacts and page.count('data-testid="copy-link"') == len(artifacts)
    for stored in artifacts:
        # A plain link to the link page (works without JavaScript); htmx fetches the fragment.
        assert f'href="{reverse("jobs-artifact-link", args=[stored.uuid])}"' in page
        assert f'hx-target="#download-link-{stored.uuid}"' in page


def test_htmx_gets_the_link_fragment_alone(client, owner, artifact):
    client.force_login(owner.user)

    fragment = client.get(
        reverse("jobs-artifact-link", args=[artifact.uuid]), headers={"HX-Request": "true"}
    )

    html = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in html and "<h1" not in html
    (url,) = re.findall(r'value="([^"]+)"', html)
    assert url.startswith("http://testserver/jobs/links/")
    client.logout()
    assert b"".join(client.get(url).streaming_content) == b"abc"


def test_an_expired_link_is_a_410_that_says_so(client, member, artifact, settings):
    settings.MODELPRESS_DOWNLOAD_LINK_SECONDS = 600
    fresh = _make_link(client, member.user, artifact, seconds_ago=590)
    stale = _make_link(client, member.user, artifact, seconds_ago=610)

    assert client.get(fresh).status_code == 200
    response = client.get(stale)

    assert response.status_code == 410
    assert "expired" in response.content.decode() and "10 minutes" in response.content.decode()
    assert len(_downloads(artifact)) == 1  # only the fresh one's


def test_a_tampered_or_foreign_token_is_a_404(client, member, artifact):
    url = _make_link(client, member.user, artifact)
    token = url.rstrip("/").rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    # Signed by this site, but for another purpose: the salt keeps it from passing.
    foreign = signing.TimestampSigner(salt="another.purpose").sign_object(
        {"a": artifact.uuid.hex, "u": member.user.pk, "l": "x"}
    )
    # A well-signed link naming an artifact that does not exist.
    unknown = signing.TimestampSigner(salt="modelpress.jobs.download-link").sign_object(
        {"a": "0" * 32, "u": member.user.pk, "l": "x"}
    )
    for bad in (flipped, foreign, unknown, "not-a-token", "a:b:c"):
        response = client.get(reverse("jobs-link-download", args=[bad]))
        assert response.status_code == 404, bad
        assert "not valid" in response.content.decode()
    assert _downloads(artifact) == []


def test_a_link_stops_working_when_its_issuer_leaves_the_team(client, member, artifact):
    url = _make_link(client, member.user, artifact)
    Membership.objects.filter(user=member.user, team=artifact.job.team).delete()

    assert client.get(url).status_code == 404
    assert _downloads(artifact) == []


def test_a_link_stops_working_when_its_issuer_is_deactivated(client, member, artifact):
    url = _make_link(client, member.user, artifact)
    member.user.is_active = False
    member.user.save(update_fields=["is_active"])

    assert client.get(url).status_code == 404


def test_a_link_to_a_deleted_artifact_is_a_404(client, member, artifact):
    url = _make_link(client, member.user, artifact)
    artifact.job.delete()

    assert client.get(url).status_code == 404


def test_an_outsider_can_make_no_link(client, outsider, artifact):
    client.force_login(outsider.user)
    assert client.get(reverse("jobs-artifact-link", args=[artifact.uuid])).status_code == 404
    response = client.post(
        reverse("api-v1:create_download_link", args=[artifact.uuid]),
        content_type="application/json",
    )
    assert response.status_code == 404


def test_logged_out_users_are_sent_to_log_in_to_make_a_link(client, artifact):
    response = client.get(reverse("jobs-artifact-link", args=[artifact.uuid]))
    assert response.status_code == 302 and reverse("accounts-login") in response["Location"]


def test_the_api_makes_a_link_for_a_token_holder(client, member, artifact):
    from accounts.tokens import create_token

    token = create_token(user=member.user, name="ci").raw
    response = client.post(
        reverse("api-v1:create_download_link", args=[artifact.uuid]),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"url", "expires_at", "link_id"}

    download = client.get(body["url"])

    assert b"".join(download.streaming_content) == b"abc"
    (event,) = _downloads(artifact)
    assert event.actor == member.user and event.detail["link"] == body["link_id"]
