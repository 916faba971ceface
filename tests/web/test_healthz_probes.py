"""`/healthz?probe=live|ready`: the subsets the orchestrators probe (deploy/k8s/40-web.yaml)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from web import health

pytestmark = pytest.mark.django_db


def _failing_database() -> dict:
    raise ConnectionError("database is down")


def test_it_answers_liveness_without_touching_any_service(client, monkeypatch):
    for name in health.CHECKS:
        monkeypatch.setitem(health.CHECKS, name, _failing_database)
    response = client.get(reverse("web-healthz"), {"probe": "live"})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "checks": {}}


def test_it_is_ready_without_a_live_worker_while_the_full_check_is_not(client):
    ready = client.get(reverse("web-healthz"), {"probe": "ready"})
    assert ready.status_code == 200, ready.json()
    assert set(ready.json()["checks"]) == {"database", "broker", "storage"}
    assert client.get(reverse("web-healthz")).status_code == 503  # no worker heartbeat


def test_it_is_not_ready_when_the_database_check_fails(client, monkeypatch):
    monkeypatch.setitem(health.CHECKS, "database", _failing_database)
    response = client.get(reverse("web-healthz"), {"probe": "ready"})
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {
        "ok": False,
        "error": "ConnectionError: database is down",
    }


def test_it_refuses_an_unknown_probe_and_names_the_valid_ones(client):
    response = client.get(reverse("web-healthz"), {"probe": "deep"})
    assert response.status_code == 400
    assert response.json()["error"] == "probe must be one of: live, ready"
