from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand

from accounts.models import User
from accounts.services import ensure_demo_user

# `make run` prints this: the demo user is an ordinary team owner, not a site admin.
CREATE_ADMIN = (
    "Site admin (Django admin at /admin/: users, teams, quotas): none yet. Create one with "
    "`.venv/bin/python manage.py createsuperuser`."
)


class Command(BaseCommand):
    help = "Create the demo user and team if absent; print the login and how to get a site admin."

    def handle(self, *args, **options) -> None:
        username, password, created = ensure_demo_user(settings.VAR_DIR / "demo_login.txt")
        state = "created" if created else "exists"
        self.stdout.write(f"Demo login ({state}): username {username}  password {password}")
        admins = User.objects.filter(is_superuser=True, is_active=True)
        if admins.exists():
            names = ", ".join(admins.order_by("username").values_list("username", flat=True)[:3])
            self.stdout.write(f"Site admin: /admin/ (superusers: {names})")
        else:
            self.stdout.write(CREATE_ADMIN)
