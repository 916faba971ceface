"""Settings helpers and the production configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_str

REPO = Path(__file__).resolve().parents[1]


def test_it_accepts_only_true_or_false_for_booleans(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "true")
    assert env_bool("SOME_FLAG") is True
    monkeypatch.setenv("SOME_FLAG", "off")
    assert env_bool("SOME_FLAG") is False
    monkeypatch.setenv("SOME_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured):
        env_bool("SOME_FLAG")


def test_it_reads_secrets_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    monkeypatch.delenv("SOME_SECRET", raising=False)
    monkeypatch.setenv("SOME_SECRET_FILE", str(secret))
    assert env_str("SOME_SECRET") == "s3cret"


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_passes_the_deployment_checklist_with_production_settings(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        MODELPRESS_PRODUCTION="true",
        SECRET_KEY="x" * 60 + "-production-secret-for-the-check",
        ALLOWED_HOSTS="modelpress.example.com",
        MODELPRESS_VAR_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_it_refuses_to_start_in_production_without_a_secret_key(tmp_path):
    result = _manage(
        "check",
        MODELPRESS_PRODUCTION="true",
        SECRET_KEY="",
        ALLOWED_HOSTS="modelpress.example.com",
        MODELPRESS_VAR_DIR=str(tmp_path),
    )
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_it_keeps_debug_off_unless_asked(settings):
    assert settings.DEBUG is False


_READ_SETTINGS = """
import json
from django.conf import settings
names = json.loads(input())
print(json.dumps({name: getattr(settings, name, None) for name in names}, default=str))
"""


def _settings_with(names: list[str], tmp_path: Path, **env: str) -> dict:
    """The named settings as config.settings computes them under `env` (a fresh process)."""
    import json

    ours = {
        "CELERY_BROKER_URL",
        "CACHE_URL",
        "MODELPRESS_PRODUCTION",
        "SECURE_HSTS_SECONDS",
        "MODELPRESS_TRUSTED_PROXIES",
    }
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    result = subprocess.run(
        [sys.executable, "-c", _READ_SETTINGS],
        input=json.dumps(names),
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "MODELPRESS_VAR_DIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_settings_send_hsts_and_keep_cookies_on_https(tmp_path):
    values = _settings_with(
        [
            "SECURE_HSTS_SECONDS",
            "SECURE_HSTS_INCLUDE_SUBDOMAINS",
            "SECURE_SSL_REDIRECT",
            "SESSION_COOKIE_SECURE",
            "CSRF_COOKIE_SECURE",
            "SESSION_COOKIE_HTTPONLY",
            "MODELPRESS_TRUSTED_PROXIES",
        ],
        tmp_path,
        MODELPRESS_PRODUCTION="true",
        SECRET_KEY="x" * 60,
        ALLOWED_HOSTS="modelpress.example.com",
    )
    assert values["SECURE_HSTS_SECONDS"] >= 31536000  # a year: what preload lists ask for
    assert values["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert values["SECURE_SSL_REDIRECT"] is True
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["CSRF_COOKIE_SECURE"] is True
    assert values["SESSION_COOKIE_HTTPONLY"] is True
    # Behind its TLS proxy: the login rate limit counts the client, not the proxy.
    assert values["MODELPRESS_TRUSTED_PROXIES"] == 1


def test_local_settings_send_no_hsts_and_trust_no_forwarded_header(tmp_path):
    names = ["SECURE_HSTS_SECONDS", "SESSION_COOKIE_SECURE", "MODELPRESS_TRUSTED_PROXIES"]
    values = _settings_with(names, tmp_path)
    # HSTS on plain-HTTP localhost would make browsers refuse it for a year.
    assert values == {
        "SECURE_HSTS_SECONDS": 0,
        "SESSION_COOKIE_SECURE": False,
        "MODELPRESS_TRUSTED_PROXIES": 0,
    }


def test_the_cache_is_shared_redis_with_a_redis_broker_and_local_memory_without(tmp_path):
    """Login rate limits count in the cache: every web process must see the same counts."""
    redis = _settings_with(["CACHES"], tmp_path, CELERY_BROKER_URL="redis://redis:6379/0")
    own = _settings_with(
        ["CACHES"],
        tmp_path,
        CELERY_BROKER_URL="redis://redis:6379/0",
        CACHE_URL="redis://cache:6379/1",
    )
    local = _settings_with(["CACHES"], tmp_path)

    assert redis["CACHES"]["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert redis["CACHES"]["default"]["LOCATION"] == "redis://redis:6379/0"
    assert own["CACHES"]["default"]["LOCATION"] == "redis://cache:6379/1"
    assert local["CACHES"]["default"]["BACKEND"].endswith("locmem.LocMemCache")
