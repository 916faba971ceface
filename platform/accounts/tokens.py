"""Personal API tokens: create (shown once), list, revoke, and authenticate a request's token.

A token reads `mp_<prefix>_<secret>`. Only its sha256 is stored: authenticating looks the
hash up through the unique index, so the secret is never compared character by character
(no timing side channel) and a database leak yields no usable token.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.db import transaction
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils import timezone

from accounts.models import ApiToken, User
from accounts.services import AccountsRejected

TOKEN_PREFIX = "mp_"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX_LENGTH = 8
# Writing last_used_at on every request would turn each API read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_ACTIVE_TOKENS = 50


def hash_token(raw_token: str) -> str:
    return hashlib.sha256(raw_token.encode()).hexdigest()


@dataclass(frozen=True)
class NewToken:
    """A token just created: `raw` exists only here, to be shown to its user once."""

    token: ApiToken
    raw: str


@transaction.atomic
def create_token(*, user: User, name: str) -> NewToken:
    name = " ".join(name.split())[:100]
    if not name:
        raise AccountsRejected("Give the token a name, e.g. the machine or script that uses it.")
    if tokens_for(user).active().count() >= MAX_ACTIVE_TOKENS:
        raise AccountsRejected(
            f"You already have {MAX_ACTIVE_TOKENS} active tokens. Revoke the ones you no longer "
            "use, then create a new one."
        )
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(user=user, name=name, prefix=prefix, key_hash=hash_token(raw))
    return NewToken(token=token, raw=raw)


def tokens_for(user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user)


def get_token_for_user(user: User, token_uuid: UUID) -> ApiToken:
    """The user's own token; anyone else's is a 404."""
    return get_object_or_404(tokens_for(user), uuid=token_uuid)


@transaction.atomic
def revoke_token(token: ApiToken) -> bool:
    """Stop the token from working; False if it was already revoked (safe to repeat)."""
    revoked = ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)


def authenticate_token(raw_token: str) -> User | None:
    """The active user a raw token belongs to; None for an unknown, revoked or malformed token
    or an inactive user."""
    if not raw_token.startswith(TOKEN_PREFIX) or len(raw_token) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(raw_token), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
