from __future__ import annotations

from django.urls import path

from jobs import prompt_views, views

urlpatterns = [
    path("start/<uuid:version_uuid>/", views.job_create, name="jobs-create"),
    path("start/<uuid:version_uuid>/builder/", views.job_builder, name="jobs-builder"),
    path("compare/", views.job_compare, name="jobs-compare"),
    path("projects/<uuid:project_uuid>/", views.project_jobs, name="jobs-project-table"),
    path("<uuid:job_uuid>/", views.job_detail, name="jobs-detail"),
    path("<uuid:job_uuid>/status/", views.job_status, name="jobs-status"),
    path("<uuid:job_uuid>/cancel/", views.job_cancel, name="jobs-cancel"),
    path("<uuid:job_uuid>/retry/", views.job_retry, name="jobs-retry"),
    path("<uuid:job_uuid>/prompts/", prompt_views.job_prompts, name="jobs-prompts"),
    path("<uuid:job_uuid>/delete/", views.job_delete, name="jobs-delete"),
    path("<uuid:job_uuid>/duplicate/", views.job_duplicate, name="jobs-duplicate"),
    path("<uuid:job_uuid>/report.json", views.report_download, name="jobs-report"),
    path("<uuid:job_uuid>/bundle.zip", views.bundle_download, name="jobs-bundle"),
    path("artifacts/<uuid:artifact_uuid>/", views.artifact_download, name="jobs-artifact"),
    path("artifacts/<uuid:artifact_uuid>/link/", views.artifact_link, name="jobs-artifact-link"),
    # Signed download links work without a session (jobs.download_links).
    path("links/<str:token>/", views.link_download, name="jobs-link-download"),
]
