"""Account workflows: sign-up with a personal team, the profile, the local demo login.

Team workflows live in accounts/teams.py, invitations in accounts/invites.py.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from django.db import IntegrityError, transaction

from accounts.models import Membership, Team, User
from web.rejections import Rejected

DEMO_USERNAME = "demo"
DEMO_EMAIL = "demo@modelpress.local"


@transaction.atomic
def create_user_with_personal_team(*, username: str, email: str, password: str) -> User:
    user = User.objects.create_user(username=username, email=email, password=password)
    team = Team.objects.create(name=f"{username}'s team", is_personal=True)
    Membership.objects.create(team=team, user=user, role=Membership.Role.OWNER)
    return user


class AccountsRejected(Rejected):
    """An account or team change that is refused; the message is shown to the user."""


def update_profile(*, user: User, first_name: str, last_name: str, email: str) -> User:
    try:
        with transaction.atomic():
            user.first_name = first_name.strip()
            user.last_name = last_name.strip()
            user.email = email.strip().lower()
            user.save(update_fields=["first_name", "last_name", "email"])
    except IntegrityError as exc:
        # The form checks uniqueness; this is the race where someone took it meanwhile.
        user.refresh_from_db(fields=["first_name", "last_name", "email"])
        raise AccountsRejected("An account with this e-mail already exists.") from exc
    return user


@transaction.atomic
def personal_team(user: User) -> Team:
    """The user's personal team; made on first use for accounts created outside sign-up
    (`manage.py createsuperuser`, the Django admin), which have none."""
    team = Team.objects.filter(
        is_personal=True, memberships__user=user, memberships__role="owner"
    ).first()
    if team is None:
        team = Team.objects.create(name=f"{user.get_username()}'s team", is_personal=True)
        Membership.objects.create(team=team, user=user, role=Membership.Role.OWNER)
    return team


def ensure_demo_user(credentials_file: Path) -> tuple[str, str, bool]:
    """Create the demo user (and its team) if absent; return (username, password, created).

    The password is random, kept in a 0600 file under var/ so every `make run` can print it.
    """
    user = User.objects.filter(username=DEMO_USERNAME).first()
    if user is not None and credentials_file.exists():
        return DEMO_USERNAME, credentials_file.read_text().strip(), False
    password = secrets.token_urlsafe(12)
    if user is None:
        create_user_with_personal_team(username=DEMO_USERNAME, email=DEMO_EMAIL, password=password)
        created = True
    else:
        user.set_password(password)
        user.save(update_fields=["password"])
        created = False
    credentials_file.parent.mkdir(parents=True, exist_ok=True)
    credentials_file.write_text(password)
    credentials_file.chmod(0o600)
    return DEMO_USERNAME, password, created
