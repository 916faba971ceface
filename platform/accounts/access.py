"""The one place that decides which teams a user can see. Every query is scoped through it."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from accounts.models import Membership, Team, User


def teams_for(user: User) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user)


def membership_for(user: User, team: Team) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, team=team).first()


def require_write(user: User, team: Team) -> None:
    """Members and above may create and change things; viewers only read and download."""
    membership = membership_for(user, team)
    if membership is None or not membership.can_write:
        raise PermissionDenied("Viewers can look and download, but not change anything.")
