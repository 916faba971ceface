from __future__ import annotations

from django.urls import path

from registry import views

urlpatterns = [
    path("new/", views.project_create, name="registry-project-create"),
    path("<uuid:project_uuid>/", views.project_detail, name="registry-project"),
    path("<uuid:project_uuid>/upload/", views.model_upload, name="registry-upload"),
    path(
        "<uuid:project_uuid>/datasets/upload/",
        views.dataset_upload,
        name="registry-dataset-upload",
    ),
    path("models/<uuid:version_uuid>/", views.model_version_detail, name="registry-model-version"),
]
