from __future__ import annotations

import pytest
from django.urls import reverse

from jobs.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def test_it_reports_503_and_names_the_missing_piece_when_no_worker_is_alive(client):
    response = client.get(reverse("web-healthz"))
    body = response.json()
    assert response.status_code == 503
    assert body["checks"]["database"]["ok"] and body["checks"]["storage"]["ok"]
    assert body["checks"]["broker"]["ok"]
    assert body["checks"]["workers"] == {"ok": False, "alive": []}


def test_it_reports_200_when_every_piece_is_up(client):
    WorkerHeartbeat.beat("w1@host", queues="cpu")
    response = client.get(reverse("web-healthz"))
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["workers"]["alive"] == ["w1@host"]


def test_it_reports_a_broker_that_cannot_be_reached(client, settings):
    from config.celery import app

    WorkerHeartbeat.beat("w1@host")
    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    try:
        response = client.get(reverse("web-healthz"))
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["ok"] is False


def test_it_forgets_workers_whose_heartbeat_is_stale(client, settings):
    from datetime import timedelta

    from django.utils import timezone

    WorkerHeartbeat.objects.create(
        hostname="old@host", last_seen=timezone.now() - timedelta(hours=1)
    )
    assert client.get(reverse("web-healthz")).json()["checks"]["workers"]["alive"] == []
