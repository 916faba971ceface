"""Team workflows: create, rename, delete; change roles, remove members, leave.

Two rules hold whatever the order of concurrent requests: a team always keeps at least one
owner, and a personal team keeps exactly one (its user). Every change that could break them
locks the team row first (`select_for_update`), so membership changes of one team run one
after another and each sees the owners the previous one left.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest

from accounts import audit
from accounts.access import require_role
from accounts.models import AuditEvent, Membership, Team, User
from accounts.quotas import active_jobs
from accounts.services import AccountsRejected
from jobs.models import Job
from registry.models import ModelVersion

log = logging.getLogger(__name__)

Role = Membership.Role
Action = AuditEvent.Action


def _lock(team: Team) -> Team:
    return Team.objects.select_for_update().get(pk=team.pk)


def _owner_count(team: Team) -> int:
    return Membership.objects.filter(team=team, role=Role.OWNER).count()


def _locked_member(team: Team, membership: Membership) -> Membership:
    target = (
        Membership.objects.select_related("user")
        .filter(pk=membership.pk, team=team)
        .select_for_update()
        .first()
    )
    if target is None:
        raise AccountsRejected("This person is no longer a member of the team.")
    return target


def _refuse_last_owner(team: Team, target: Membership, doing: str) -> None:
    if target.role == Role.OWNER and _owner_count(team) <= 1:
        raise AccountsRejected(
            f"“{team.name}” must keep at least one owner, so you cannot {doing}. "
            "Make someone else owner first."
        )


@transaction.atomic
def create_team(*, user: User, name: str, request: HttpRequest | None = None) -> Team:
    name = name.strip()
    if not name:
        raise AccountsRejected("A team needs a name.")
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=user, role=Role.OWNER)
    audit.record(team=team, actor=user, action=Action.TEAM_CREATED, target=team, request=request)
    return team


@transaction.atomic
def rename_team(*, team: Team, actor: User, name: str, request: HttpRequest | None = None) -> Team:
    team = _lock(team)
    require_role(actor, team, Role.OWNER)
    name = name.strip()
    if not name:
        raise AccountsRejected("A team needs a name.")
    old = team.name
    if name == old:
        return team
    team.name = name
    team.save(update_fields=["name"])
    audit.record(
        team=team,
        actor=actor,
        action=Action.TEAM_RENAMED,
        target=team,
        detail={"from": old, "to": name},
        request=request,
    )
    return team


@transaction.atomic
def delete_team(*, team: Team, actor: User) -> None:
    """Delete a shared team with its projects, models, datasets, jobs and stored files.

    Refused while jobs are queued or running: a worker would write artifacts for rows that
    no longer exist. The team's audit log goes with it; the deletion is logged to the server
    log instead.
    """
    team = _lock(team)
    require_role(actor, team, Role.OWNER)
    if team.is_personal:
        raise AccountsRejected("A personal team cannot be deleted.")
    if count := active_jobs(team):
        raise AccountsRejected(
            f"“{team.name}” has {count} job(s) queued or running. "
            "Cancel them or wait for them to finish, then delete the team."
        )
    versions = ModelVersion.objects.filter(project__team=team)
    if converting := versions.filter(status=ModelVersion.Status.CONVERTING).count():
        # The worker would store the converted model for a row that no longer exists.
        raise AccountsRejected(
            f"“{team.name}” has {converting} model upload(s) still converting. Wait for them "
            "to finish, then delete the team."
        )
    # The stored files go with their rows, once this commits (registry.stored_files).
    Job.objects.filter(team=team).delete()
    team.delete()
    log.info("team %s (%s) deleted by %s", team.uuid, team.name, actor.get_username())


def assignable_roles(actor_role: str, team: Team) -> list[str]:
    """Roles `actor_role` may give to others: admins up to admin, owners any (except a
    second owner of a personal team)."""
    if actor_role == Role.OWNER:
        roles = [Role.OWNER, Role.ADMIN, Role.MEMBER, Role.VIEWER]
        return roles[1:] if team.is_personal else roles
    if actor_role == Role.ADMIN:
        return [Role.ADMIN, Role.MEMBER, Role.VIEWER]
    return []


def check_can_assign(actor_membership: Membership, team: Team, role: str) -> None:
    if role not in Role.values:
        raise AccountsRejected(f"Unknown role {role!r}.")
    if role == Role.OWNER and team.is_personal:
        raise AccountsRejected(
            "A personal team has a single owner. Create a team to share ownership."
        )
    if role not in assignable_roles(actor_membership.role, team):
        raise PermissionDenied("Only an owner can make someone an owner.")


@transaction.atomic
def change_role(
    *,
    team: Team,
    actor: User,
    membership: Membership,
    role: str,
    request: HttpRequest | None = None,
) -> Membership:
    team = _lock(team)
    actor_membership = require_role(actor, team, Role.ADMIN)
    target = _locked_member(team, membership)
    check_can_assign(actor_membership, team, role)
    if target.role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can change an owner's role.")
    if target.role == role:
        return target
    if role != Role.OWNER:
        _refuse_last_owner(team, target, f"make {target.user.get_username()} {role}")
    old = target.role
    target.role = role
    target.save(update_fields=["role"])
    audit.record(
        team=team,
        actor=actor,
        action=Action.ROLE_CHANGED,
        target=target.user,
        detail={"from": old, "to": role},
        request=request,
    )
    return target


@transaction.atomic
def remove_member(
    *, team: Team, actor: User, membership: Membership, request: HttpRequest | None = None
) -> None:
    team = _lock(team)
    actor_membership = require_role(actor, team, Role.ADMIN)
    target = _locked_member(team, membership)
    if target.user_id == actor.pk:
        raise AccountsRejected("To remove yourself, use “Leave team”.")
    if target.role == Role.OWNER and actor_membership.role != Role.OWNER:
        raise PermissionDenied("Only an owner can remove an owner.")
    _refuse_last_owner(team, target, f"remove {target.user.get_username()}")
    target.delete()
    audit.record(
        team=team,
        actor=actor,
        action=Action.MEMBER_REMOVED,
        target=target.user,
        detail={"role": target.role},
        request=request,
    )


@transaction.atomic
def leave_team(*, team: Team, user: User, request: HttpRequest | None = None) -> None:
    team = _lock(team)
    membership = Membership.objects.select_for_update().filter(team=team, user=user).first()
    if membership is None:
        raise AccountsRejected(f"You are not a member of “{team.name}”.")
    if team.is_personal and membership.role == Role.OWNER:
        raise AccountsRejected("You cannot leave your personal team.")
    _refuse_last_owner(team, membership, "leave it")
    membership.delete()
    audit.record(
        team=team,
        actor=user,
        action=Action.MEMBER_LEFT,
        target=user,
        detail={"role": membership.role},
        request=request,
    )
