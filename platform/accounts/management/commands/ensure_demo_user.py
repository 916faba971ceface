from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.services import ensure_demo_user


class Command(BaseCommand):
    help = "Create the local demo user and team if absent, and print the login."

    def handle(self, *args, **options) -> None:
        username, password, created = ensure_demo_user(settings.VAR_DIR / "demo_login.txt")
        state = "created" if created else "exists"
        self.stdout.write(f"Demo login ({state}): username {username}  password {password}")
