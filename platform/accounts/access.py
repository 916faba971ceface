"""The one place that decides which teams a user can see. Every query is scoped through it."""

from __future__ import annotations

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
