from __future__ import annotations

import pytest
from django.core.management import call_command

from accounts.models import Membership, User

pytestmark = pytest.mark.django_db


def test_it_creates_the_demo_login_once_and_prints_it_every_time(settings, tmp_path, capsys):
    settings.VAR_DIR = tmp_path
    call_command("ensure_demo_user")
    first = capsys.readouterr().out
    call_command("ensure_demo_user")
    second = capsys.readouterr().out

    assert "(created)" in first and "(exists)" in second
    password = (tmp_path / "demo_login.txt").read_text().strip()
    assert password in first and password in second
    user = User.objects.get(username="demo")
    assert user.check_password(password)
    assert Membership.objects.get(user=user).role == "owner"
    assert (tmp_path / "demo_login.txt").stat().st_mode & 0o777 == 0o600


def test_it_says_how_to_get_a_site_admin_and_that_way_works(client, settings, tmp_path, capsys):
    import os

    settings.VAR_DIR = tmp_path
    call_command("ensure_demo_user")
    printed = capsys.readouterr().out
    assert "none yet. Create one with `.venv/bin/python manage.py createsuperuser`" in printed

    # What the printed command does (non-interactively here), then the admin site opens.
    os.environ["DJANGO_SUPERUSER_PASSWORD"] = "an-admin-passphrase-1"
    try:
        call_command(
            "createsuperuser", interactive=False, username="root", email="root@example.com"
        )
    finally:
        del os.environ["DJANGO_SUPERUSER_PASSWORD"]
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "root", "password": "an-admin-passphrase-1", "next": "/admin/"},
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/accounts/team/").status_code == 200
    # The superuser can use the platform too (no personal team until they make one).
    assert client.get("/", follow=True).status_code == 200
    created = client.post("/projects/new/", {"name": "Admin's"})
    assert created.status_code == 302 and created["Location"].startswith("/projects/")

    call_command("ensure_demo_user")
    assert "Site admin: /admin/ (superusers: root)" in capsys.readouterr().out
