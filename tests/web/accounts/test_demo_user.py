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
