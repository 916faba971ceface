"""REST API for compression jobs: start, follow, cancel, read the report, download the files.

The same access helpers and services as the web views: another team's job is a 404, a
viewer's start or cancel a 403; every download is recorded in the team's audit log.
"""

# No `from __future__ import annotations`: django-ninja reads the views' annotations to
# build the request schema, and for @paginate views it resolves them in its own module's
# namespace (the wrapper's), where names like UUID are undefined.

import json
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import ValidationError, field_validator, model_validator

from accounts.access import require_write
from jobs.access import get_artifact_for_user, get_job_for_user
from jobs.bundles import bundle_name, stream_bundle
from jobs.download_links import issue_link
from jobs.downloads import artifact_response
from jobs.models import Artifact, Job
from jobs.services import cancel_job, create_job, delete_job, record_download
from registry.access import get_model_version_for_user, get_project_for_user
from web.api import (
    READ_ERRORS,
    WRITE_ERRORS,
    ErrorOut,
    Pagination,
    SafeText,
    acting_user,
    refuse_nul,
)

router = Router(tags=["jobs"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


def _file_response_doc(media_type: str, description: str) -> dict[str, Any]:
    return {"responses": {200: {"description": description, "content": {media_type: _BINARY}}}}


class ArtifactOut(Schema):
    id: UUID
    name: str
    format: str
    precision: str
    size_bytes: int
    sha256: str
    download_url: str = Field(description="GET it (same authentication) to download the file.")

    @staticmethod
    def resolve_id(artifact: Artifact) -> UUID:
        return artifact.uuid

    @staticmethod
    def resolve_download_url(artifact: Artifact) -> str:
        return reverse("api-v1:download_artifact", kwargs={"artifact_uuid": artifact.uuid})


class ReportSummary(Schema):
    """The headline figures of a finished job's report (GET /jobs/{id}/report for all)."""

    original_size_bytes: int
    result_size_bytes: int
    size_ratio: float | None = Field(description="Result / original size (0.25: 4x smaller).")
    param_ratio: float | None
    latency_ratio: float | None = Field(description="Result / original p50 (below 1: faster).")
    speed: str = Field(
        default="",
        description=(
            'The speed change with its noise band, e.g. "1.42× faster (noise ±4%)" or "no '
            'measurable speed change (1.03×, noise ±5%)".'
        ),
    )
    original_p50_ms: float
    result_p50_ms: float
    cosine_similarity: float | None
    top1_agreement: float | None
    accuracy_drop_points: float | None
    device: str
    recommended: bool = Field(
        default=True,
        description="False: below the quality floor; kept for download, not recommended.",
    )
    quality_reasons: list[str] = Field(
        default_factory=list, description="Why the result is not recommended ([] = it is)."
    )
    perplexity_change_pct: float | None = Field(
        default=None,
        description="Language models: perplexity increase over the original, percent "
        "(negative = lower). Their latency figures are per generated token.",
    )
    decode_ratio: float | None = Field(
        default=None,
        description="Language models: compressed / original decode tokens/s (above 1: faster).",
    )
    next_token_agreement: float | None = Field(
        default=None,
        description="Language models: share of positions where both predict the same token.",
    )


class JobOut(Schema):
    id: UUID
    title: str = Field(
        description="What the job is, readable: model version · preset (or steps) · dataset, "
        "e.g. `resnet v2 · Static int8 (calibrated) · calib-images` (jobs.titles)."
    )
    project: UUID
    model_version: UUID
    dataset: UUID | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    progress: float = Field(description="0..1 within the whole job.")
    error: str
    cancel_requested: bool
    queue: str = Field(description="The Celery queue the job was sent to (gpu or cpu).")
    worker: str = Field(description="The worker that ran the job; empty until one claims it.")
    device: str = Field(description="That worker's hardware, e.g. GPU and CPU model.")
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_id(job: Job) -> UUID:
        return job.uuid

    @staticmethod
    def resolve_title(job: Job) -> str:
        from jobs.titles import job_title

        return job_title(job)

    @staticmethod
    def resolve_project(job: Job) -> UUID:
        return job.project.uuid

    @staticmethod
    def resolve_model_version(job: Job) -> UUID:
        return job.model_version.uuid

    @staticmethod
    def resolve_dataset(job: Job) -> UUID | None:
        return job.dataset.uuid if job.dataset else None

    @staticmethod
    def resolve_created_by(job: Job) -> str | None:
        return job.created_by.get_username() if job.created_by else None


class JobDetailOut(JobOut):
    queue_position: str | None = Field(
        description="While queued: its place in its queue and what is ahead, e.g. `2nd in the "
        "cpu queue, behind: resnet v1 · job 1a2b3c4d (running)` (web.queue_position)."
    )
    recipe: dict[str, Any]
    summary: ReportSummary | None = Field(description="Once the job has succeeded.")
    artifacts: list[ArtifactOut]

    @staticmethod
    def resolve_queue_position(job: Job) -> str | None:
        from web.queue_position import job_position

        position = job_position(job)
        return position.text if position else None

    @staticmethod
    def resolve_summary(job: Job) -> dict[str, Any] | None:
        return _summary(job)

    @staticmethod
    def resolve_artifacts(job: Job) -> list[Artifact]:
        return list(job.artifacts.all())


class JobIn(Schema):
    recipe: dict[str, Any] | str | None = Field(
        None,
        description="The recipe as a JSON object or as YAML text (`modelpress recipe` prints "
        "the default). Leave out, with no preset, for the default recipe: dynamic int8, or "
        "llm-int4 for a language model.",
    )
    preset: SafeText | None = Field(None, description="A named recipe instead (GET /presets).")
    dataset: UUID | None = Field(None, description="A dataset of the model's project.")

    @field_validator("recipe")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return refuse_nul(value)

    @model_validator(mode="after")
    def _one_recipe(self) -> "JobIn":
        if self.recipe is not None and self.preset is not None:
            raise ValueError("give a recipe or a preset, not both")
        return self


class CancelOut(Schema):
    cancelled: bool = Field(description="Queued jobs stop at once; running ones at next check.")
    job: JobOut


class PresetOut(Schema):
    name: str
    title: str
    description: str
    needs_data: bool
    llm: bool = Field(description="For language models (the others are for ONNX graphs).")


def _summary(job: Job) -> dict[str, Any] | None:
    from compress_engine import Report

    if job.status != Job.Status.SUCCEEDED or not job.report:
        return None
    try:
        report = Report.model_validate(job.report)
    except ValidationError:
        return None  # an unreadable stored report: the figures are left out, not guessed
    fidelity, accuracy = report.fidelity.summary, report.accuracy
    return {
        "original_size_bytes": report.original.size_bytes,
        "result_size_bytes": report.result.size_bytes,
        "size_ratio": report.size_ratio,
        "param_ratio": report.param_ratio,
        "latency_ratio": report.latency_ratio,
        "speed": report.speed_text(),
        "original_p50_ms": report.original.latency.p50_ms,
        "result_p50_ms": report.result.latency.p50_ms,
        "cosine_similarity": fidelity.cosine_similarity,
        "top1_agreement": fidelity.top1_agreement,
        "accuracy_drop_points": accuracy.drop_points if accuracy else None,
        "device": report.device,
        "recommended": report.recommended,
        "quality_reasons": report.quality_reasons,
        **_llm_summary(report),
    }


def _llm_summary(report: Any) -> dict[str, Any]:
    llm = report.llm
    if llm is None:
        return {}
    return {
        "perplexity_change_pct": llm.ppl_delta_pct,
        "decode_ratio": llm.decode_ratio,
        "next_token_agreement": llm.next_token_agreement,
    }


def _job(request: HttpRequest, job_uuid: UUID) -> Job:
    return get_job_for_user(acting_user(request), job_uuid)


@router.get("/presets", response={200: list[PresetOut], **READ_ERRORS})
def list_presets(request: HttpRequest) -> list[dict[str, Any]]:
    """The named recipes a job can start from (`preset` in POST /models/{id}/jobs)."""
    from compress_engine import PRESETS

    return [
        {
            "name": p.name,
            "title": p.title,
            "description": p.description,
            "needs_data": p.needs_data,
            "llm": p.llm,
        }
        for p in PRESETS.values()
    ]


@router.get("/projects/{project_uuid}/jobs", response={200: list[JobOut], **READ_ERRORS})
@paginate(Pagination)
def list_jobs(
    request: HttpRequest,
    project_uuid: UUID,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
) -> QuerySet[Job]:
    """The project's jobs, newest first; `status` filters."""
    project = get_project_for_user(acting_user(request), project_uuid)
    jobs = project.jobs.select_related("project", "model_version", "dataset", "created_by")
    if status is not None:
        jobs = jobs.filter(status=status)
    return jobs.order_by("-created_at", "-id")


@router.post(
    "/models/{version_uuid}/jobs",
    response={201: JobDetailOut, 429: ErrorOut, **WRITE_ERRORS},
    summary="Create Job",
)
def create_job_route(request: HttpRequest, version_uuid: UUID, payload: JobIn) -> Status[Job]:
    """Start a compression job on a model version (members and above). 400 says why a job
    cannot start (recipe errors, a dataset the recipe needs, a model still converting, a
    language-model recipe or a text dataset for an ONNX graph, or the reverse); 429
    that the team already runs its maximum of jobs at once."""
    from compress_engine import EngineError, get_preset

    user = acting_user(request)
    version = get_model_version_for_user(user, version_uuid)
    require_write(user, version.project.team)
    dataset = None
    if payload.dataset is not None:
        # Scoped to the model's project, like the job form: anything else is a 404.
        dataset = get_object_or_404(version.project.datasets, uuid=payload.dataset)
    recipe: Any = payload.recipe
    if payload.preset is not None:
        try:
            recipe = get_preset(payload.preset).recipe()
        except EngineError as exc:
            raise HttpError(400, str(exc)) from exc
    job = create_job(
        model_version=version, user=user, recipe=recipe, dataset=dataset, request=request
    )
    return Status(201, job)


@router.get("/jobs/{job_uuid}", response={200: JobDetailOut, **READ_ERRORS})
def get_job(request: HttpRequest, job_uuid: UUID) -> Job:
    """Status, stage and progress; the report summary and artifacts once it has succeeded."""
    return _job(request, job_uuid)


@router.delete(
    "/jobs/{job_uuid}",
    response={204: None, 409: ErrorOut, **WRITE_ERRORS},
    summary="Delete Job",
)
def delete_job_route(request: HttpRequest, job_uuid: UUID) -> Status[None]:
    """Delete a finished job with its report and files (owners and admins). 409 while it is
    queued or running: cancel it first."""
    user = acting_user(request)
    delete_job(_job(request, job_uuid), user=user, request=request)
    return Status(204, None)


@router.post(
    "/jobs/{job_uuid}/cancel",
    response={200: CancelOut, 409: ErrorOut, **WRITE_ERRORS},
    summary="Cancel Job",
)
def cancel_job_route(request: HttpRequest, job_uuid: UUID) -> dict[str, Any]:
    """Cancel a queued job, or ask the worker to stop a running one. 409 once it has ended."""
    user = acting_user(request)
    job = _job(request, job_uuid)
    require_write(user, job.team)
    if not cancel_job(job, user=user, request=request):
        raise HttpError(409, f"The job had already ended ({job.status}); nothing to cancel.")
    return {"cancelled": True, "job": job}


@router.get(
    "/jobs/{job_uuid}/report",
    response={200: dict[str, Any], **READ_ERRORS},
    openapi_extra={"responses": {200: {"description": "The full report (JSON)."}}},
)
def get_report(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """The job's full report: every measurement, per-artifact checks and sha256, versions."""
    job = _job(request, job_uuid)
    if not job.report:
        raise HttpError(404, "This job has no report yet: it is written when the job succeeds.")
    record_download(
        job=job,
        filename=f"report-{job.uuid}.json",
        target=job,
        user=acting_user(request),
        request=request,
    )
    return HttpResponse(json.dumps(job.report), content_type="application/json")


@router.get("/jobs/{job_uuid}/artifacts", response={200: list[ArtifactOut], **READ_ERRORS})
def list_artifacts(request: HttpRequest, job_uuid: UUID) -> QuerySet[Artifact]:
    """The files a finished job produced (each checked in its own runtime)."""
    return _job(request, job_uuid).artifacts.all()


@router.get(
    "/artifacts/{artifact_uuid}/download",
    response=READ_ERRORS,
    openapi_extra={
        "responses": {
            **_file_response_doc("application/octet-stream", "The artifact's bytes.")["responses"],
            302: {"description": "With `redirect=true` on S3 storage: to a presigned URL."},
        }
    },
)
def download_artifact(
    request: HttpRequest,
    artifact_uuid: UUID,
    redirect: bool = Query(
        False,
        description="On S3 storage, answer 302 to a presigned URL of the storage service "
        "(valid for a minute; follow it without this API's Authorization header) instead of "
        "streaming the file through the server.",
    ),
) -> HttpResponse:
    """Download one artifact (streamed); compare its sha256 with the artifact list's."""
    artifact = get_artifact_for_user(acting_user(request), artifact_uuid)
    record_download(
        job=artifact.job,
        filename=artifact.name,
        target=artifact,
        user=acting_user(request),
        request=request,
    )
    # Streamed unless asked: API clients send a token, and one that follows a redirect as it
    # is (the modelpress CLI refuses to) would hand it to the storage service.
    return artifact_response(artifact, redirect=redirect)


class DownloadLinkOut(Schema):
    url: str = Field(
        description="GET it with no authentication to download the file (following "
        "redirects: on S3 storage it answers with one to the storage service)."
    )
    expires_at: datetime
    link_id: str = Field(description="Names the link in the team's audit log.")


@router.post(
    "/artifacts/{artifact_uuid}/link",
    response={201: DownloadLinkOut, **READ_ERRORS},
    summary="Create Download Link",
)
def create_download_link(request: HttpRequest, artifact_uuid: UUID) -> Status[dict[str, Any]]:
    """A signed URL that downloads the artifact without authentication, for a device or a
    script, until `expires_at` (MODELPRESS_DOWNLOAD_LINK_SECONDS, 10 minutes by default).
    Each use is recorded in the team's audit log as your download; it stops working once you
    leave the team or the job is deleted (404), and once it expires (410)."""
    user = acting_user(request)
    artifact = get_artifact_for_user(user, artifact_uuid)
    link = issue_link(artifact=artifact, user=user)
    return Status(
        201,
        {
            "url": request.build_absolute_uri(link.path),
            "expires_at": link.expires_at,
            "link_id": link.link_id,
        },
    )


@router.get(
    "/jobs/{job_uuid}/bundle",
    response=READ_ERRORS,
    openapi_extra=_file_response_doc("application/zip", "The deployment bundle (.zip)."),
)
def download_bundle(request: HttpRequest, job_uuid: UUID) -> StreamingHttpResponse:
    """Every artifact with report.json, REPORT.md, preprocessing and a runnable example, as
    one streamed .zip. Only a succeeded job has one."""
    job = _job(request, job_uuid)
    if job.status != Job.Status.SUCCEEDED or not job.report:
        raise HttpError(404, f"Only a succeeded job has a bundle; this one is {job.status}.")
    name = bundle_name(job)
    record_download(job=job, filename=name, target=job, user=acting_user(request), request=request)
    response = StreamingHttpResponse(stream_bundle(job), content_type="application/zip")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
