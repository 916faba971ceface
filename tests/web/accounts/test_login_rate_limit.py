"""Login rate limiting (accounts.ratelimit): a lock per (username, address) and per address,
and only a slow-down for a username attacked from many addresses, so nobody can lock an
account's owner out."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.urls import reverse

from accounts import ratelimit
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed login attempts. Try again in"


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def clock(monkeypatch):
    """The limiter's clock, moved by hand: `clock.now += 600`."""
    fake = SimpleNamespace(now=1_000_000.0)
    monkeypatch.setattr(ratelimit, "time", SimpleNamespace(time=lambda: fake.now))
    return fake


def _login(client, username: str, password: str, ip: str = "10.0.0.1", **extra):
    return client.post(
        reverse("accounts-login"),
        {"username": username, "password": password},
        REMOTE_ADDR=ip,
        **extra,
    )


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_it_refuses_the_11th_attempt_even_with_the_right_password(client, owner, clock):
    name = owner.user.username
    for _ in range(10):
        response = _login(client, name, "wrong")
        assert response.status_code == 200
        assert "Please enter a correct username and password" in response.content.decode()

    response = _login(client, name, PASSWORD)

    assert response.status_code == 429
    assert response["Retry-After"] == "900"
    page = response.content.decode()
    assert f"{LOCKED} 15 minutes, or reset your password." in page
    assert not _logged_in(client)


def test_an_attacker_cannot_lock_the_owner_out_from_another_address(client, owner, clock):
    name, attacker, home = owner.user.username, "10.0.1.66", "10.0.1.1"
    for _ in range(25):  # under the address limit (30): only the pair locks
        _login(client, name, "wrong", ip=attacker)

    # The attacker's address is still locked, the right password included.
    locked = _login(client, name, PASSWORD, ip=attacker)
    assert locked.status_code == 429 and locked["Retry-After"] == "900"
    assert not _logged_in(client)
    # The owner, from their own address, logs in at the first try.
    assert _login(client, name, PASSWORD, ip=home).status_code == 302
    client.logout()
    # The owner's login does not free the attacker's address.
    assert _login(client, name, PASSWORD, ip=attacker).status_code == 429


def test_a_username_attacked_from_many_addresses_is_slowed_not_locked(client, owner, clock):
    name = owner.user.username
    for i in range(40):  # each address fails once, in any letter case
        assert _login(client, name.upper(), "wrong", ip=f"10.0.2.{i}").status_code == 200

    # An address that just failed on it waits a few seconds before its next try ...
    slowed = _login(client, name, "wrong", ip="10.0.2.39")
    assert slowed.status_code == 429 and slowed["Retry-After"] == "5"
    assert f"{LOCKED} 5 seconds." in slowed.content.decode()
    clock.now += 5
    assert _login(client, name, "wrong", ip="10.0.2.39").status_code == 200
    # ... while the owner, from an address of their own, is not delayed at all, and a
    # mistyped password costs them those few seconds only.
    assert _login(client, name, "typo", ip="10.0.3.1").status_code == 200
    assert _login(client, name, PASSWORD, ip="10.0.3.1").status_code == 429
    clock.now += 5
    assert _login(client, name, PASSWORD, ip="10.0.3.1").status_code == 302


def test_it_counts_the_pair_in_any_letter_case(client, owner, clock):
    for _ in range(10):
        _login(client, owner.user.username.upper(), "wrong")
    assert _login(client, owner.user.username, PASSWORD).status_code == 429


def test_it_counts_an_address_across_usernames(client, owner, member, clock):
    for i in range(30):
        assert _login(client, f"guess{i}", "wrong", ip="10.0.3.1").status_code == 200

    refused = _login(client, member.user.username, PASSWORD, ip="10.0.3.1")
    elsewhere = _login(client, owner.user.username, PASSWORD, ip="10.0.3.2")

    assert refused.status_code == 429
    assert elsewhere.status_code == 302


def test_the_lockout_ends_with_its_window(client, owner, clock):
    for _ in range(10):
        _login(client, owner.user.username, "wrong")
    clock.now += 10 * 60
    assert f"{LOCKED} 5 minutes" in _login(client, owner.user.username, PASSWORD).content.decode()
    clock.now += 4 * 60 + 59
    assert f"{LOCKED} 1 minute," in _login(client, owner.user.username, PASSWORD).content.decode()
    clock.now += 1

    response = _login(client, owner.user.username, PASSWORD)

    assert response.status_code == 302 and _logged_in(client)


def test_a_new_window_starts_after_the_old_one_ends(client, owner, clock):
    for _ in range(9):
        _login(client, owner.user.username, "wrong")
    clock.now += 15 * 60
    for _ in range(9):
        _login(client, owner.user.username, "wrong")
    # 18 failures, but never 10 in one window.
    assert _login(client, owner.user.username, PASSWORD).status_code == 302


def test_a_success_clears_its_usernames_count(client, owner, clock):
    for _ in range(9):
        _login(client, owner.user.username, "wrong")
    assert _login(client, owner.user.username, PASSWORD).status_code == 302
    client.logout()
    for _ in range(9):
        assert _login(client, owner.user.username, "wrong").status_code == 200
    assert _login(client, owner.user.username, PASSWORD).status_code == 302


def test_a_success_does_not_reset_another_addresses_count(client, owner, member, clock):
    attacker = "10.0.4.66"
    for i in range(29):
        _login(client, f"guess{i}", "wrong", ip=attacker)
    _login(client, owner.user.username, "wrong", ip=attacker)  # the 30th

    # The owner logs in from elsewhere; the attacker logs in to an account of their own.
    assert _login(client, owner.user.username, PASSWORD, ip="10.0.4.1").status_code == 302
    client.logout()
    response = _login(client, member.user.username, PASSWORD, ip=attacker)

    assert response.status_code == 429 and not _logged_in(client)


def test_it_trusts_x_forwarded_for_only_from_configured_proxies(client, owner, settings, clock):
    for i in range(30):  # one address, each time claiming to be another
        _login(client, f"guess{i}", "wrong", ip="10.0.5.1", HTTP_X_FORWARDED_FOR=f"1.2.3.{i}")
    assert _login(client, owner.user.username, PASSWORD, ip="10.0.5.1").status_code == 429

    # Behind one proxy, the client is the entry that proxy appended: the last one.
    settings.MODELPRESS_TRUSTED_PROXIES = 1
    proxy, client_ip = "10.0.6.1", "203.0.113.7"
    for i in range(30):
        forged = f"1.2.3.{i}, {client_ip}"  # whatever the client sent, then the proxy's entry
        _login(client, f"guess{i}", "wrong", ip=proxy, HTTP_X_FORWARDED_FOR=forged)

    locked = _login(
        client,
        owner.user.username,
        PASSWORD,
        ip=proxy,
        HTTP_X_FORWARDED_FOR=f"9.9.9.9, {client_ip}",
    )
    other_client = _login(
        client, owner.user.username, PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.2"
    )

    assert locked.status_code == 429
    assert other_client.status_code == 302


def test_the_admin_login_counts_too(client, owner, clock):
    owner.user.is_staff = True
    owner.user.save(update_fields=["is_staff"])
    url = reverse("admin:login")
    for _ in range(10):
        client.post(url, {"username": owner.user.username, "password": "wrong"})

    response = client.post(url, {"username": owner.user.username, "password": PASSWORD})

    assert LOCKED in response.content.decode() and not _logged_in(client)


def test_it_lets_logins_through_when_the_cache_is_down(client, owner, monkeypatch, caplog):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    for name in ("get_many", "add", "delete_many"):
        monkeypatch.setattr(cache, name, down)

    assert _login(client, owner.user.username, "wrong").status_code == 200
    assert _login(client, owner.user.username, PASSWORD).status_code == 302
    assert "the cache is unavailable" in caplog.text
