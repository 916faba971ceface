"""REST API for projects, model versions and datasets (mounted under /api/v1/).

The same access helpers and services as the web views: another team's object is a 404, a
viewer's upload a 403, a refused upload a 400 with the service's message.
"""

# No `from __future__ import annotations`: django-ninja reads the views' annotations to
# build the request schema, and for @paginate views it resolves them in its own module's
# namespace (the wrapper's), where names like UUID are undefined.

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, File, Form, Router, Schema, Status, UploadedFile
from ninja.errors import HttpError
from ninja.pagination import paginate
from pydantic import field_validator

from accounts.access import require_write, teams_for
from accounts.models import Team
from registry.access import (
    get_dataset_for_user,
    get_model_version_for_user,
    get_project_for_user,
    projects_for,
)
from registry.deletion import delete_dataset, delete_model_version, delete_project
from registry.models import Dataset, ModelVersion, Project
from registry.services import (
    RegistryRejected,
    create_project,
    ingest_dataset_upload,
    ingest_model_upload,
    too_large_message,
)
from web.api import READ_ERRORS, WRITE_ERRORS, ErrorOut, Pagination, SafeText, acting_user

router = Router(tags=["projects"])

UPLOAD_ERRORS = {**WRITE_ERRORS, 413: ErrorOut}


class TeamRef(Schema):
    id: UUID
    name: str

    @staticmethod
    def resolve_id(team: Team) -> UUID:
        return team.uuid


class ProjectOut(Schema):
    id: UUID
    name: str
    description: str
    team: TeamRef
    created_at: datetime

    @staticmethod
    def resolve_id(project: Project) -> UUID:
        return project.uuid


class ProjectIn(Schema):
    name: SafeText = Field(min_length=1, max_length=100)
    description: SafeText = Field("", max_length=10_000)
    team: UUID | None = Field(
        None, description="One of your teams (GET /me); default: your personal team."
    )

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class ModelVersionOut(Schema):
    id: UUID
    project: UUID
    name: str
    version: int
    status: str = Field(description="converting, ready or failed.")
    status_message: str
    source_format: str
    original_filename: str
    size_bytes: int | None
    sha256: str
    opset: int | None
    parameters: int | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    llm: dict[str, Any] | None = Field(
        description="A language model's facts once converted (architecture, parameters, "
        "layers, context_length, tokenizer, chat_template, source_format, ...); null for "
        "other models."
    )
    uploaded_by: str | None
    created_at: datetime
    queue_position: str | None = Field(
        description="While the conversion waits: its place in the convert queue and what is "
        "ahead, e.g. `2nd in the convert queue, behind: resnet v1 (converting)`."
    )

    @staticmethod
    def resolve_id(version: ModelVersion) -> UUID:
        return version.uuid

    @staticmethod
    def resolve_queue_position(version: ModelVersion) -> str | None:
        from web.queue_position import conversion_position

        position = conversion_position(version)
        return position.text if position else None

    @staticmethod
    def resolve_project(version: ModelVersion) -> UUID:
        return version.project.uuid

    @staticmethod
    def resolve_uploaded_by(version: ModelVersion) -> str | None:
        return version.uploaded_by.get_username() if version.uploaded_by else None


class DatasetOut(Schema):
    id: UUID
    project: UUID
    name: str
    original_filename: str
    size_bytes: int
    sha256: str
    kind: str = Field(description="npz, images or text.")
    samples: int = Field(description="Samples, images, or passages of a text dataset.")
    characters: int | None = Field(description="A text dataset's characters; null otherwise.")
    arrays: dict[str, Any]
    label_array: str
    uploaded_by: str | None
    created_at: datetime

    @staticmethod
    def resolve_id(dataset: Dataset) -> UUID:
        return dataset.uuid

    @staticmethod
    def resolve_project(dataset: Dataset) -> UUID:
        return dataset.project.uuid

    @staticmethod
    def resolve_uploaded_by(dataset: Dataset) -> str | None:
        return dataset.uploaded_by.get_username() if dataset.uploaded_by else None


@router.get("/projects", response={200: list[ProjectOut], **READ_ERRORS})
@paginate(Pagination)
def list_projects(request: HttpRequest) -> QuerySet[Project]:
    """The projects of every team you are in, newest first."""
    return projects_for(acting_user(request)).select_related("team").order_by("-created_at", "-id")


@router.post(
    "/projects",
    response={201: ProjectOut, 409: ErrorOut, **WRITE_ERRORS},
    summary="Create Project",
)
def create_project_route(request: HttpRequest, payload: ProjectIn) -> Status[Project]:
    """Create a project in one of your teams (members and above)."""
    user = acting_user(request)
    if payload.team is not None:
        team = teams_for(user).filter(uuid=payload.team).first()
        if team is None:
            raise HttpError(404, "Not found: no such team among yours.")
    else:
        team = teams_for(user).filter(is_personal=True, memberships__role="owner").first()
        if team is None:
            raise HttpError(400, "You have no personal team: give `team`, one of GET /me's teams.")
    require_write(user, team)
    try:
        project = create_project(
            team=team, user=user, name=payload.name, description=payload.description
        )
    except RegistryRejected as exc:  # the only refusal: the name is taken in this team
        raise HttpError(409, str(exc)) from exc
    return Status(201, project)


@router.get("/projects/{project_uuid}", response={200: ProjectOut, **READ_ERRORS})
def get_project(request: HttpRequest, project_uuid: UUID) -> Project:
    return get_project_for_user(acting_user(request), project_uuid)


@router.delete(
    "/projects/{project_uuid}",
    response={204: None, 409: ErrorOut, **WRITE_ERRORS},
    summary="Delete Project",
)
def delete_project_route(request: HttpRequest, project_uuid: UUID) -> Status[None]:
    """Delete a project with its model versions, datasets, finished jobs and their files
    (owners and admins). 409 while any of its jobs is queued or running."""
    user = acting_user(request)
    project = get_project_for_user(user, project_uuid)
    delete_project(project=project, user=user, request=request)
    return Status(204, None)


@router.get("/projects/{project_uuid}/models", response={200: list[ModelVersionOut], **READ_ERRORS})
@paginate(Pagination)
def list_model_versions(request: HttpRequest, project_uuid: UUID) -> QuerySet[ModelVersion]:
    """Every version of every model in the project, newest first."""
    project = get_project_for_user(acting_user(request), project_uuid)
    return project.model_versions.select_related("project", "uploaded_by").order_by(
        "-created_at", "-id"
    )


def _check_size(request: HttpRequest, upload: UploadedFile) -> None:
    if getattr(request, "upload_too_large", False) or upload.size > (
        settings.MODELPRESS_MAX_UPLOAD_BYTES
    ):
        raise HttpError(413, too_large_message())


@router.post("/projects/{project_uuid}/models", response={201: ModelVersionOut, **UPLOAD_ERRORS})
def upload_model(
    request: HttpRequest,
    project_uuid: UUID,
    file: File[UploadedFile],
    name: Annotated[SafeText, Form("")],
    input_shapes: Annotated[SafeText, Form("")],
) -> Status[ModelVersion]:
    """Upload a model as the next version of `name` (default: from the file name).

    Multipart, streamed to disk. ONNX is checked and ready at once; TorchScript, torch.export,
    Keras and SavedModel files start `converting` (poll GET /models/{id}), as do language
    models (a .zip of a Hugging Face folder, or a .gguf file), which become an
    onnxruntime-genai model with its facts in `llm`. `input_shapes`: one `name: 1x3x224x224`
    per line, for formats that do not record them (not for language models).
    """
    user = acting_user(request)
    project = get_project_for_user(user, project_uuid)
    require_write(user, project.team)
    _check_size(request, file)
    version = ingest_model_upload(
        project=project,
        user=user,
        upload=file,
        name=name,
        input_shapes=input_shapes,
        request=request,
    )
    return Status(201, version)


@router.get("/models/{version_uuid}", response={200: ModelVersionOut, **READ_ERRORS})
def get_model_version(request: HttpRequest, version_uuid: UUID) -> ModelVersion:
    return get_model_version_for_user(acting_user(request), version_uuid)


@router.delete(
    "/models/{version_uuid}",
    response={204: None, 409: ErrorOut, **WRITE_ERRORS},
    summary="Delete Model Version",
)
def delete_model_version_route(request: HttpRequest, version_uuid: UUID) -> Status[None]:
    """Delete a model version with its finished jobs and their files (owners and admins).
    409 while a job on it, or one distilling from it, is queued or running."""
    user = acting_user(request)
    version = get_model_version_for_user(user, version_uuid)
    delete_model_version(version=version, user=user, request=request)
    return Status(204, None)


@router.get("/projects/{project_uuid}/datasets", response={200: list[DatasetOut], **READ_ERRORS})
@paginate(Pagination)
def list_datasets(request: HttpRequest, project_uuid: UUID) -> QuerySet[Dataset]:
    project = get_project_for_user(acting_user(request), project_uuid)
    return project.datasets.select_related("project", "uploaded_by").order_by("-created_at", "-id")


@router.post("/projects/{project_uuid}/datasets", response={201: DatasetOut, **UPLOAD_ERRORS})
def upload_dataset(
    request: HttpRequest,
    project_uuid: UUID,
    file: File[UploadedFile],
    name: Annotated[SafeText, Form("")],
) -> Status[Dataset]:
    """Upload calibration/evaluation samples (multipart, streamed to disk): a .npz, a .zip of
    image folders, or text for language models (.txt, or .jsonl with a `text` field per
    line)."""
    user = acting_user(request)
    project = get_project_for_user(user, project_uuid)
    require_write(user, project.team)
    _check_size(request, file)
    dataset = ingest_dataset_upload(
        project=project, user=user, upload=file, name=name, request=request
    )
    return Status(201, dataset)


@router.delete(
    "/datasets/{dataset_uuid}",
    response={204: None, 409: ErrorOut, **WRITE_ERRORS},
    summary="Delete Dataset",
)
def delete_dataset_route(request: HttpRequest, dataset_uuid: UUID) -> Status[None]:
    """Delete a dataset with the finished jobs that used it and their files (owners and
    admins). 409 while a job using it is queued or running."""
    user = acting_user(request)
    dataset = get_dataset_for_user(user, dataset_uuid)
    delete_dataset(dataset=dataset, user=user, request=request)
    return Status(204, None)
