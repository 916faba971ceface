"""REST API: who the token (or session) belongs to, and their teams and roles."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Router, Schema

from accounts.models import Membership
from web.api import READ_ERRORS, acting_user

router = Router(tags=["account"])


class TeamMembershipOut(Schema):
    id: UUID
    name: str
    is_personal: bool
    role: str
    can_write: bool


class MeOut(Schema):
    username: str
    email: str
    teams: list[TeamMembershipOut]


@router.get("/me", response={200: MeOut, **READ_ERRORS})
def me(request: HttpRequest) -> dict[str, Any]:
    """The authenticated user with every team they are in and their role there (`modelpress
    login` checks a token with it)."""
    user = acting_user(request)
    memberships = (
        Membership.objects.filter(user=user)
        .select_related("team")
        .order_by("-team__is_personal", "team__name")
    )
    return {
        "username": user.get_username(),
        "email": user.email,
        "teams": [
            {
                "id": m.team.uuid,
                "name": m.team.name,
                "is_personal": m.team.is_personal,
                "role": m.role,
                "can_write": m.can_write,
            }
            for m in memberships
        ],
    }
