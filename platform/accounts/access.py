"""The one place that decides which teams a user can see and what their role lets them do.

Every query is scoped through it: a team the user is not in is a 404 (its existence is not
revealed); a team they are in but whose action needs a higher role is a 403.
"""

from __future__ import annotations

from uuid import UUID

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import get_object_or_404

from accounts.models import Membership, Team, User

Role = Membership.Role

# Each role can do everything the roles below it can.
ROLE_RANK: dict[str, int] = {Role.VIEWER: 0, Role.MEMBER: 1, Role.ADMIN: 2, Role.OWNER: 3}

# What each role adds, in words for refusals and the team page.
ROLE_POWERS: dict[str, str] = {
    Role.VIEWER: "see and download the team's models, datasets and results",
    Role.MEMBER: "upload models and datasets and start jobs",
    Role.ADMIN: "manage members, invites and projects, and delete models, datasets and jobs",
    Role.OWNER: "rename or delete the team and make others owner",
}


def role_at_least(role: str, minimum: str) -> bool:
    return ROLE_RANK[role] >= ROLE_RANK[minimum]


def teams_for(user: User) -> QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user)


def membership_for(user: User, team: Team) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, team=team).first()


def get_membership_for_user(user: User, team_uuid: UUID) -> Membership:
    """The user's membership in the team named by the URL (with the team); 404 otherwise."""
    if not user.is_authenticated:
        raise Http404
    return get_object_or_404(
        Membership.objects.select_related("team"), user=user, team__uuid=team_uuid
    )


def require_role(user: User, team: Team, minimum: str) -> Membership:
    """The user's membership if their role is `minimum` or higher; PermissionDenied otherwise."""
    membership = membership_for(user, team)
    if membership is None or not role_at_least(membership.role, minimum):
        label = Role(minimum).label.lower()
        raise PermissionDenied(
            f"Only a team {label} or higher can {ROLE_POWERS[minimum]} in “{team.name}”."
        )
    return membership


def can_write(user: User, team: Team) -> bool:
    """Members and above may create and change things; viewers only read and download."""
    membership = membership_for(user, team)
    return membership is not None and membership.can_write


def require_write(user: User, team: Team) -> None:
    if not can_write(user, team):
        raise PermissionDenied("Viewers can look and download, but not change anything.")


def can_delete(user: User, team: Team) -> bool:
    """Owners and admins delete projects, model versions, datasets and finished jobs."""
    membership = membership_for(user, team)
    return membership is not None and role_at_least(membership.role, Role.ADMIN)


def rights(user: User, team: Team) -> dict[str, bool]:
    """can_write and can_delete for a page's context, from one membership lookup."""
    membership = membership_for(user, team)
    return {
        "can_write": membership is not None and membership.can_write,
        "can_delete": membership is not None and role_at_least(membership.role, Role.ADMIN),
    }


def require_delete(user: User, team: Team) -> None:
    if not can_delete(user, team):
        raise PermissionDenied(
            f"Only a team owner or admin can delete projects, models, datasets and jobs in "
            f"“{team.name}”."
        )
