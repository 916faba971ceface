"""The team audit log: `record(...)` from any app when a user does something to a team's
objects. It writes in the caller's transaction, so an action that rolls back leaves no event.
"""

from __future__ import annotations

from typing import Any

from django.db import models
from django.http import HttpRequest

from accounts.models import AuditEvent, Team, User

Action = AuditEvent.Action


def _client_ip(request: HttpRequest | None) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites
    # it, and a forgeable address is worse than none in an audit log.
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def _target_fields(target: models.Model | None) -> dict[str, str]:
    if target is None:
        return {"target_type": "", "target_id": "", "target_label": ""}
    public_id = getattr(target, "uuid", None) or target.pk
    return {
        "target_type": type(target).__name__,
        "target_id": str(public_id),
        "target_label": str(target)[:200],
    }


def record(
    *,
    team: Team,
    actor: User | None,
    action: str,
    target: models.Model | None = None,
    detail: dict[str, Any] | None = None,
    request: HttpRequest | None = None,
) -> AuditEvent:
    """Append one event to `team`'s log. `target` is any model instance: its class name, uuid
    (or pk) and str() are kept, so the event stays readable after the target is deleted."""
    if action not in Action.values:
        raise ValueError(f"unknown audit action {action!r}")
    if actor is not None and not actor.is_authenticated:
        actor = None
    return AuditEvent.objects.create(
        team=team,
        actor=actor,
        actor_label=actor.get_username() if actor is not None else "",
        action=action,
        detail=detail or {},
        ip_address=_client_ip(request),
        **_target_fields(target),
    )
