"""Login rate limiting: failed logins counted per username and per client address.

After MODELPRESS_LOGIN_MAX_FAILURES failures for one username (any address), or
MODELPRESS_LOGIN_MAX_FAILURES_PER_IP from one address (any username), within
MODELPRESS_LOGIN_WINDOW_SECONDS of the first, every login for that username or from that
address is refused — the right password included, and without checking it, so a lockout
reveals nothing — until the window ends. Counts live in Django's cache, which must be shared
by all web processes (Redis in production: config/settings.py).

A successful login clears its username's count (the owner has proved the password), never
an address's: an attacker with an account of their own could otherwise reset their
address's count between guesses at other accounts.

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
    """Logins refused for `retry_after` more seconds."""

    retry_after: int

    @property
    def minutes(self) -> int:
        return max(1, math.ceil(self.retry_after / 60))

    def message(self) -> str:
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


def _keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    """(cache key, limit) per counter; hashed so any username makes a valid, short key."""
    user = hashlib.sha256(username.casefold().encode()).hexdigest()
    ip = hashlib.sha256(client_ip(request).encode()).hexdigest()
    return [
        (f"{_PREFIX}:user:{user}", settings.MODELPRESS_LOGIN_MAX_FAILURES),
        (f"{_PREFIX}:ip:{ip}", settings.MODELPRESS_LOGIN_MAX_FAILURES_PER_IP),
    ]


@_fail_open
def lockout(request: HttpRequest | None, username: str) -> Lockout | None:
    """The lockout that applies to this login attempt, if any (the longest of the two)."""
    now = time.time()
    window = settings.MODELPRESS_LOGIN_WINDOW_SECONDS
    waits = []
    for key, limit in _keys(request, username):
        counts = cache.get_many([key, f"{key}:start"])
        start = counts.get(f"{key}:start")
        if counts.get(key, 0) >= limit and start is not None and now < start + window:
            waits.append(math.ceil(start + window - now))
    return Lockout(retry_after=max(waits)) if waits else None


@_fail_open
def record_failure(request: HttpRequest | None, username: str) -> None:
    """Count one failed login for the username and the address."""
    now = time.time()
    window = settings.MODELPRESS_LOGIN_WINDOW_SECONDS
    for key, _limit in _keys(request, username):
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
def record_success(username: str) -> None:
    """Clear the username's count (never an address's; see the module docstring)."""
    key = _keys(None, username)[0][0]
    cache.delete_many([key, f"{key}:start"])
