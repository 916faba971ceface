"""Role ordering and the permission helpers other apps call."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from accounts.access import ROLE_RANK, require_role, require_write, role_at_least
from accounts.models import Membership

pytestmark = pytest.mark.django_db

Role = Membership.Role


def test_it_orders_roles_owner_admin_member_viewer():
    assert sorted(Role.values, key=ROLE_RANK.__getitem__) == ["viewer", "member", "admin", "owner"]
    assert role_at_least("owner", "admin") and role_at_least("admin", "admin")
    assert not role_at_least("member", "admin")


@pytest.mark.parametrize(
    ("persona", "allowed"),
    [
        ("owner", {"viewer", "member", "admin", "owner"}),
        ("admin", {"viewer", "member", "admin"}),
        ("member", {"viewer", "member"}),
        ("viewer", {"viewer"}),
    ],
)
def test_it_allows_each_role_what_is_at_or_below_it(team, persona, allowed, request):
    user = request.getfixturevalue(persona).user
    for minimum in Role.values:
        if minimum in allowed:
            assert require_role(user, team, minimum).user == user
        else:
            with pytest.raises(PermissionDenied, match=f"team {minimum}"):
                require_role(user, team, minimum)


def test_it_refuses_every_role_to_an_outsider(team, outsider):
    with pytest.raises(PermissionDenied):
        require_role(outsider.user, team, Role.VIEWER)
    with pytest.raises(PermissionDenied):
        require_write(outsider.user, team)


def test_it_keeps_require_write_for_members_and_up(team, owner, admin, member, viewer):
    for persona in (owner, admin, member):
        require_write(persona.user, team)
    with pytest.raises(PermissionDenied, match="Viewers can look and download"):
        require_write(viewer.user, team)
