"""Users, teams, memberships, invites and the team audit log. Every other object belongs
to a team."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone


class User(AbstractUser):
    """Custom user from day one, so fields can be added without a painful migration."""

    email = models.EmailField(unique=True)


class Team(models.Model):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    is_personal = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="teams"
    )
    # Set by site admins in Django admin; empty means the site-wide setting applies.
    storage_quota_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Storage for model versions, datasets and job artifacts. Empty: "
        "MODELPRESS_TEAM_STORAGE_QUOTA_BYTES.",
    )
    max_concurrent_jobs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Jobs queued or running at once. Empty: MODELPRESS_TEAM_MAX_CONCURRENT_JOBS.",
    )

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="unique_team_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"

    @property
    def can_write(self) -> bool:
        """Members and above create uploads and jobs; viewers only read and download."""
        return self.role != self.Role.VIEWER


def hash_invite_token(raw_token: str) -> str:
    """Invite tokens are stored as sha256 only: a database leak does not leak usable links."""
    return hashlib.sha256(raw_token.encode()).hexdigest()


class InviteQuerySet(models.QuerySet["Invite"]):
    def pending(self) -> InviteQuerySet:
        return self.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )


class Invite(models.Model):
    """An e-mailed, single-use invitation to join a team with a role.

    The raw token exists only in the e-mailed link; the row keeps its sha256.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invites")
    email = models.EmailField()
    role = models.CharField(
        max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER
    )
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InviteQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Invite for {self.email} to {self.team}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def unusable_reason(self) -> str | None:
        """Why the link can no longer be used, in words for the visitor; None if usable."""
        if self.accepted_at is not None:
            return "This invitation has already been used."
        if self.revoked_at is not None:
            return "This invitation was withdrawn by a team admin."
        if self.is_expired:
            return "This invitation has expired."
        return None


class AuditEvent(models.Model):
    """Who did what in a team. Labels are snapshots: they stay readable after the actor or
    the target is renamed or deleted."""

    class Action(models.TextChoices):
        UPLOADED_MODEL = "uploaded_model", "Uploaded a model"
        UPLOADED_DATASET = "uploaded_dataset", "Uploaded a dataset"
        STARTED_JOB = "started_job", "Started a job"
        CANCELLED_JOB = "cancelled_job", "Cancelled a job"
        DELETED = "deleted", "Deleted"
        DOWNLOADED = "downloaded", "Downloaded"
        INVITED = "invited", "Invited"
        INVITE_ACCEPTED = "invite_accepted", "Accepted an invite"
        INVITE_REVOKED = "invite_revoked", "Revoked an invite"
        ROLE_CHANGED = "role_changed", "Changed a role"
        MEMBER_REMOVED = "member_removed", "Removed a member"
        MEMBER_LEFT = "member_left", "Left the team"
        TEAM_CREATED = "team_created", "Created the team"
        TEAM_RENAMED = "team_renamed", "Renamed the team"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="audit_events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    actor_label = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=32, choices=Action.choices)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=200, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at"], name="audit_team_created_idx")]

    def __str__(self) -> str:
        return f"{self.actor_label or 'system'} {self.action} {self.target_label}".strip()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A personal API token (`mp_<prefix>_<secret>`) acting with its user's permissions.

    The token is shown once, at creation; the row keeps its sha256 (a database leak does not
    leak usable tokens) and the short random `prefix`, which tells tokens apart in the UI.
    """

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} (mp_{self.prefix}_…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
