"""Team invitations: an admin invites an e-mail address with a role; the account with that
address joins the team by following the e-mailed link while logged in, once.

The link is not a bearer token: an account with another e-mail address is refused
(InviteForSomeoneElse), so a forwarded or leaked link lets nobody else in. ModelPress does
not verify e-mail addresses, so "the invited address" means the account's e-mail equals the
invite's, compared case-insensitively.

The raw token exists only in the e-mail. The row keeps its sha256, so the link cannot be
rebuilt from the database, and a lookup is one indexed equality on the hash.
"""

from __future__ import annotations

import secrets
import smtplib
from datetime import timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from accounts import audit
from accounts.access import require_role
from accounts.models import AuditEvent, Invite, Membership, Team, User, hash_invite_token
from accounts.services import AccountsRejected
from accounts.teams import check_can_assign

Role = Membership.Role
Action = AuditEvent.Action


class InviteUnusable(AccountsRejected):
    """The link was used, revoked or has expired (410), or never existed (404)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class InviteForSomeoneElse(AccountsRejected):
    """The signed-in account's e-mail is not the invited address (403)."""

    status = 403


def mask_email(email: str) -> str:
    """`a…@example.com`: enough for its owner to recognise, little for anyone else."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}…@{domain}"


def is_addressee(invite: Invite, user: User) -> bool:
    """Whether the account's e-mail is the invited address (case-insensitive)."""
    return bool(user.email) and user.email.strip().casefold() == invite.email.strip().casefold()


def wrong_account_message(invite: Invite, user: User) -> str:
    # The signed-in address in full: it is the reader's own, and two masked addresses can
    # look the same (new@… and newbie@… are both n…@).
    return (
        f"This invite is for {mask_email(invite.email)}; you are signed in as {user.email}. "
        "Sign out and sign in or sign up with the invited address."
    )


def find_invite(raw_token: str) -> Invite:
    """The invite behind a link, usable or not; InviteUnusable(404) if there is none."""
    invite = (
        Invite.objects.select_related("team", "invited_by")
        .filter(token_hash=hash_invite_token(raw_token))
        .first()
    )
    if invite is None:
        raise InviteUnusable(
            "This invitation link is not valid. Check that you copied the whole link, "
            "or ask a team admin for a new invitation.",
            status=404,
        )
    return invite


def _send_invite_email(invite: Invite, raw_token: str, request: HttpRequest) -> None:
    link = request.build_absolute_uri(reverse("accounts-invite", args=[raw_token]))
    context = {"invite": invite, "link": link, "inviter": invite.invited_by}
    subject = f"You are invited to join “{invite.team.name}” on ModelPress"
    body = render_to_string("accounts/email/invite.txt", context)
    try:
        send_mail(subject, body, None, [invite.email])
    except (smtplib.SMTPException, OSError) as exc:
        raise AccountsRejected(
            f"The invitation e-mail to {invite.email} could not be sent ({exc}). "
            "Nothing was saved; check the server's e-mail settings and try again."
        ) from exc


@transaction.atomic
def create_invite(
    *, team: Team, actor: User, email: str, role: str, request: HttpRequest
) -> Invite:
    """Create an invite and e-mail its link. Re-inviting an address withdraws its earlier
    pending invites, so only the newest link works. If the e-mail cannot be sent, nothing
    is saved."""
    # No team lock: an invite changes no membership, and the e-mail is sent inside this
    # transaction (so a failed send saves nothing); a lock would be held through SMTP.
    actor_membership = require_role(actor, team, Role.ADMIN)
    check_can_assign(actor_membership, team, role)
    email = email.strip().lower()
    existing = (
        Membership.objects.filter(team=team, user__email__iexact=email)
        .select_related("user")
        .first()
    )
    if existing is not None:
        raise AccountsRejected(
            f"{email} is already a member of “{team.name}” ({existing.get_role_display()})."
        )
    now = timezone.now()
    replaced = Invite.objects.pending().filter(team=team, email=email).update(revoked_at=now)
    raw_token = secrets.token_urlsafe(32)
    invite = Invite.objects.create(
        team=team,
        email=email,
        role=role,
        token_hash=hash_invite_token(raw_token),
        invited_by=actor,
        expires_at=now + timedelta(hours=settings.MODELPRESS_INVITE_TTL_HOURS),
    )
    audit.record(
        team=team,
        actor=actor,
        action=Action.INVITED,
        target=invite,
        detail={"email": email, "role": role, "replaced_pending": replaced},
        request=request,
    )
    # Last: a failure rolls back the invite and its audit event.
    _send_invite_email(invite, raw_token, request)
    return invite


@transaction.atomic
def revoke_invite(
    *, team: Team, invite: Invite, actor: User, request: HttpRequest | None = None
) -> Invite:
    require_role(actor, team, Role.ADMIN)
    invite = Invite.objects.select_for_update().get(pk=invite.pk, team=team)
    if invite.accepted_at is not None:
        raise AccountsRejected(f"The invite for {invite.email} was already accepted.")
    if invite.revoked_at is not None:
        return invite
    invite.revoked_at = timezone.now()
    invite.save(update_fields=["revoked_at"])
    audit.record(
        team=team,
        actor=actor,
        action=Action.INVITE_REVOKED,
        target=invite,
        detail={"email": invite.email, "role": invite.role},
        request=request,
    )
    return invite


@transaction.atomic
def accept_invite(*, raw_token: str, user: User, request: HttpRequest | None = None) -> Membership:
    """Join the invite's team with its role, if `user`'s e-mail is the invited address.
    Single use: the invite row is locked, so two concurrent accepts of one link make one
    membership."""
    invite = find_invite(raw_token)
    # Team lock first, like every other membership change, then the invite itself.
    team = Team.objects.select_for_update().get(pk=invite.team_id)
    invite = Invite.objects.select_for_update().get(pk=invite.pk)
    if reason := invite.unusable_reason:
        raise InviteUnusable(reason, status=410)
    existing = Membership.objects.filter(team=team, user=user).first()
    if existing is not None:
        # The link stays usable: it may have reached the wrong person, and its addressee
        # can still use it.
        raise AccountsRejected(
            f"You are already a member of “{team.name}” as {existing.get_role_display()}; "
            "the invitation was not used."
        )
    if not is_addressee(invite, user):
        # Not consumed: its addressee can still use it.
        raise InviteForSomeoneElse(wrong_account_message(invite, user))
    membership = Membership.objects.create(team=team, user=user, role=invite.role)
    invite.accepted_at = timezone.now()
    invite.accepted_by = user
    invite.save(update_fields=["accepted_at", "accepted_by"])
    audit.record(
        team=team,
        actor=user,
        action=Action.INVITE_ACCEPTED,
        target=invite,
        detail={"email": invite.email, "role": invite.role},
        request=request,
    )
    return membership
