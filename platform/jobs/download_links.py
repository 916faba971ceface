"""Signed short-lived download links: a URL that fetches one artifact without a session, for a
device, a CI job or curl.

A link's token names the artifact, the user who asked for it and a random link id, signed with
the site's SECRET_KEY (TimestampSigner, a salt of its own, so no other signed value of the
site passes for one). Nothing is stored per link. At each use the signature and the age
(MODELPRESS_DOWNLOAD_LINK_SECONDS) are checked, the artifact must still exist, and its issuer
must still be an active member of the artifact's team: removing or deactivating someone stops
their links at once. Every use is recorded in the team's audit log as a download by the
issuer, naming the link.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.models import User
from jobs.models import Artifact

SALT = "modelpress.jobs.download-link"

_INVALID = "This download link is not valid: it is mistyped, or no longer leads to a file."


class LinkRefused(Exception):
    """A link that cannot be used; the message says why, in words for whoever holds it."""


class LinkExpired(LinkRefused):
    pass


class LinkInvalid(LinkRefused):
    """Tampered, unknown, or no longer backed by an artifact its issuer may download. One
    answer for all of these: a link holder learns nothing about the team."""


@dataclass(frozen=True)
class IssuedLink:
    path: str  # site-relative; the view makes it absolute
    link_id: str
    expires_at: datetime


@dataclass(frozen=True)
class ResolvedLink:
    artifact: Artifact
    issuer: User
    link_id: str


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def lifetime() -> timedelta:
    return timedelta(seconds=settings.MODELPRESS_DOWNLOAD_LINK_SECONDS)


def lifetime_minutes() -> int:
    """The lifetime as people read it (at least 1)."""
    return max(1, round(settings.MODELPRESS_DOWNLOAD_LINK_SECONDS / 60))


def issue_link(*, artifact: Artifact, user: User) -> IssuedLink:
    """A new link to `artifact` on `user`'s authority. The caller has checked that the user
    may download it (jobs.access.get_artifact_for_user)."""
    link_id = secrets.token_hex(6)
    token = _signer().sign_object({"a": artifact.uuid.hex, "u": user.pk, "l": link_id})
    return IssuedLink(
        path=reverse("jobs-link-download", kwargs={"token": token}),
        link_id=link_id,
        expires_at=timezone.now() + lifetime(),
    )


def resolve_link(token: str) -> ResolvedLink:
    """The artifact a link fetches and on whose authority; LinkExpired or LinkInvalid if
    it cannot be used."""
    try:
        payload: Any = _signer().unsign_object(token, max_age=lifetime())
    except signing.SignatureExpired as exc:
        raise LinkExpired(
            f"This download link has expired (links last {lifetime_minutes()} minutes). Ask "
            "for a new one on the job's results page."
        ) from exc
    except (signing.BadSignature, ValueError) as exc:  # ValueError: a signed non-JSON value
        raise LinkInvalid(_INVALID) from exc
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("a"), str)
        and isinstance(payload.get("u"), int)
        and isinstance(payload.get("l"), str)
    ):
        raise LinkInvalid(_INVALID)
    try:
        artifact_uuid = uuid.UUID(hex=payload["a"])
    except ValueError as exc:
        raise LinkInvalid(_INVALID) from exc
    issuer = User.objects.filter(pk=payload["u"], is_active=True).first()
    if issuer is None:
        raise LinkInvalid(_INVALID)
    # The issuer's membership is read now, not when the link was made: leaving the team
    # ends every link they handed out.
    artifact = (
        Artifact.objects.filter(uuid=artifact_uuid, job__team__memberships__user=issuer)
        .select_related("job__team")
        .first()
    )
    if artifact is None:
        raise LinkInvalid(_INVALID)
    return ResolvedLink(artifact=artifact, issuer=issuer, link_id=payload["l"])


def record_link_download(link: ResolvedLink, request: HttpRequest | None = None) -> None:
    """One use of a link, in the team's audit log: a download by the issuer, via the link."""
    artifact = link.artifact
    audit.record(
        team=artifact.job.team,
        actor=link.issuer,
        action=audit.Action.DOWNLOADED,
        target=artifact,
        detail={
            "file": artifact.name,
            "job": str(artifact.job.uuid),
            "via": "signed link",
            "link": link.link_id,
        },
        request=request,
    )
