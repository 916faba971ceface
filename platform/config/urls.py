from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from config.api import api

urlpatterns = [
    path("", include("web.urls")),
    path("accounts/", include("accounts.urls")),
    path("projects/", include("registry.urls")),
    path("jobs/", include("jobs.urls")),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
]
