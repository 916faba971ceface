from __future__ import annotations

from django.urls import path

from registry import deletion_views, prefill, views

urlpatterns = [
    path("new/", views.project_create, name="registry-project-create"),
    path("<uuid:project_uuid>/", views.project_detail, name="registry-project"),
    path(
        "<uuid:project_uuid>/delete/", deletion_views.project_delete, name="registry-project-delete"
    ),
    path("<uuid:project_uuid>/upload/", views.model_upload, name="registry-upload"),
    path(
        "<uuid:project_uuid>/upload/names/",
        prefill.upload_input_names,
        name="registry-upload-names",
    ),
    path(
        "<uuid:project_uuid>/datasets/upload/",
        views.dataset_upload,
        name="registry-dataset-upload",
    ),
    path("datasets/<uuid:dataset_uuid>/", views.dataset_detail, name="registry-dataset"),
    path(
        "datasets/<uuid:dataset_uuid>/delete/",
        deletion_views.dataset_delete,
        name="registry-dataset-delete",
    ),
    path(
        "datasets/<uuid:dataset_uuid>/samples/<int:index>.png",
        views.dataset_sample,
        name="registry-dataset-sample",
    ),
    path("models/<uuid:version_uuid>/", views.model_version_detail, name="registry-model-version"),
    path(
        "models/<uuid:version_uuid>/delete/",
        deletion_views.model_version_delete,
        name="registry-model-version-delete",
    ),
    path(
        "models/<uuid:version_uuid>/status/",
        views.model_version_status,
        name="registry-model-version-status",
    ),
    path(
        "models/<uuid:version_uuid>/input-shapes/",
        views.model_version_input_shapes,
        name="registry-model-version-input-shapes",
    ),
    path(
        "models/<uuid:version_uuid>/preprocessing/",
        views.model_version_preprocessing,
        name="registry-model-version-preprocessing",
    ),
]
