from __future__ import annotations

from django.urls import path

from web import views

urlpatterns = [
    path("", views.home, name="web-home"),
    path("dashboard/", views.dashboard, name="web-dashboard"),
    path("healthz", views.healthz, name="web-healthz"),
    path("metrics", views.metrics, name="web-metrics"),
]
