"""Login rate limiting that an attacker cannot turn against an account's owner.

Three counters of failed logins, each within MODELPRESS_LOGIN_WINDOW_SECONDS of its first
failure:

- per address (any username): after MODELPRESS_LOGIN_MAX_FAILURES_PER_IP, every login from
  that address is refused until the window ends;
- per pair (username, address): after MODELPRESS_LOGIN_MAX_FAILURES, logins for that username
  from that address are refused until the window ends;
- per username (any address): never a lock. After MODELPRESS_LOGIN_MAX_FAILURES failures the
  username is under attack, and from then on an address that failed on it must wait
  MODELPRESS_LOGIN_SLOWDOWN_SECONDS after its last failure before trying it again.

A locked username would be a denial of service: anyone who knows it could keep its owner out.
Locking the pair and only slowing the username keep the owner able to log in from their own
address whatever others send: the first attempt from an address that has not failed on the
username is never delayed, and a mistyped password costs its owner a few seconds. An attacker
is held to MODELPRESS_LOGIN_MAX_FAILURES guesses per address per window, one every few
seconds once the username is under attack, and MODELPRESS_LOGIN_MAX_FAILURES_PER_IP
guesses per address across usernames.

A refused login is refused without checking the password (the right one included), so a
refusal reveals nothing. Counts live in Django's cache, which must be shared by all web
processes (Redis in production: config/settings.py).

A successful login clears its username's count and its pair's (the owner has proved the
password), never an address's: an attacker with an account of their own could otherwise
reset their address's count between guesses at other accounts.

If the cache is unreachable, logins go on unlimited (logged as errors) rather than nobody
being able to log in while Redis is down.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

log = logging.getLogger(__name__)

_PREFIX = "login-failures"
_F = TypeVar("_F", bound=Callable[..., Any])


def _fail_open(func: _F) -> _F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception:  # the cache backend's own errors (redis.ConnectionError, ...)
            log.exception("login rate limiting skipped: the cache is unavailable")
            return None

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class Lockout:
    """Logins refused for `retry_after` more seconds: a lock, or the slow-down of a username
    under attack (`slowed`)."""

    retry_after: int
    slowed: bool = False

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after / 60))

    def message(self) -> str:
        if self.slowed:
            unit = "second" if self.retry_after == 1 else "seconds"
            return f"Too many failed login attempts. Try again in {self.retry_after} {unit}."
        unit = "minute" if self.minutes == 1 else "minutes"
        return (
            f"Too many failed login attempts. Try again in {self.minutes} {unit}, or reset "
            "your password."
        )


def client_ip(request: HttpRequest | None) -> str:
    """The client's address: REMOTE_ADDR, or behind MODELPRESS_TRUSTED_PROXIES reverse
    proxies the X-Forwarded-For entry the outermost of them added (entries further left are
    whatever the client sent, so never trusted)."""
    if request is None:
        return "unknown"
    hops = settings.MODELPRESS_TRUSTED_PROXIES
    if hops > 0:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        chain = [part.strip() for part in forwarded.split(",") if part.strip()]
        if len(chain) >= hops:
            return chain[-hops]
    return request.META.get("REMOTE_ADDR") or "unknown"


def _hash(*parts: str) -> str:
    # Hashed so any username makes a valid, short key.
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class _Keys:
    """The cache keys of one attempt's counters."""

    user: str  # the username, any address: the slow-down
    pair: str  # the username from this address: a lock
    ip: str  # this address, any username: a lock

    @classmethod
    def of(cls, request: HttpRequest | None, username: str) -> _Keys:
        name, ip = username.casefold(), client_ip(request)
        return cls(
            user=f"{_PREFIX}:user:{_hash(name)}",
            pair=f"{_PREFIX}:pair:{_hash(name, ip)}",
            ip=f"{_PREFIX}:ip:{_hash(ip)}",
        )

    def locks(self) -> list[tuple[str, int]]:
        """(key, limit) of the counters that lock."""
        return [
            (self.pair, settings.MODELPRESS_LOGIN_MAX_FAILURES),
            (self.ip, settings.MODELPRESS_LOGIN_MAX_FAILURES_PER_IP),
        ]


def _window(key: str, now: float) -> tuple[int, float]:
    """The key's failures within its window and when the window started ((0, now) once it
    has passed)."""
    counts = cache.get_many([key, f"{key}:start"])
    start = counts.get(f"{key}:start")
    if start is None or now >= start + settings.MODELPRESS_LOGIN_WINDOW_SECONDS:
        return 0, now
    return int(counts.get(key, 0)), start


@_fail_open
def lockout(request: HttpRequest | None, username: str) -> Lockout | None:
    """The refusal that applies to this login attempt, if any (the longest wait)."""
    now = time.time()
    window = settings.MODELPRESS_LOGIN_WINDOW_SECONDS
    keys = _Keys.of(request, username)
    waits = []
    for key, limit in keys.locks():
        count, start = _window(key, now)
        if count >= limit:
            waits.append(Lockout(retry_after=math.ceil(start + window - now)))
    if _window(keys.user, now)[0] >= settings.MODELPRESS_LOGIN_MAX_FAILURES:
        last = cache.get(f"{keys.pair}:last")
        slowdown = settings.MODELPRESS_LOGIN_SLOWDOWN_SECONDS
        if last is not None and now < last + slowdown:
            waits.append(Lockout(retry_after=math.ceil(last + slowdown - now), slowed=True))
    return max(waits, key=lambda w: w.retry_after) if waits else None


def _increment(key: str, now: float, window: int) -> None:
    start = cache.get(f"{key}:start")
    if start is not None and now >= start + window:  # outlived its window
        cache.delete_many([key, f"{key}:start"])
    # add() and incr() are atomic (SET NX and INCR on Redis): concurrent guesses all
    # count, and the first failure of a window starts it.
    cache.add(f"{key}:start", now, timeout=window)
    cache.add(key, 0, timeout=window)
    try:
        cache.incr(key)
    except ValueError:  # expired between the two calls
        cache.add(key, 1, timeout=window)


@_fail_open
def record_failure(request: HttpRequest | None, username: str) -> None:
    """Count one failed login for the username, the pair and the address, and remember
    when the pair last failed (the slow-down waits from then)."""
    now = time.time()
    window = settings.MODELPRESS_LOGIN_WINDOW_SECONDS
    keys = _Keys.of(request, username)
    for key in (keys.user, keys.pair, keys.ip):
        _increment(key, now, window)
    cache.set(f"{keys.pair}:last", now, timeout=window)


@_fail_open
def record_success(request: HttpRequest | None, username: str) -> None:
    """Clear the username's and the pair's counts (never the address's; see the module
    docstring)."""
    keys = _Keys.of(request, username)
    cache.delete_many(
        [keys.user, f"{keys.user}:start", keys.pair, f"{keys.pair}:start", f"{keys.pair}:last"]
    )
