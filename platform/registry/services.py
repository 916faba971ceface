"""Registry workflows: create projects, validate and store uploaded models."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.template.defaultfilters import filesizeformat

from accounts.models import Team, User
from registry.models import Dataset, ModelVersion, Project
from registry.npz import NpzRejected, summarize_npz

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[^A-Za-z0-9._ -]+")


class RegistryRejected(Exception):
    """A project or upload the registry refuses; the message is shown to the user."""


def create_project(*, team: Team, user: User, name: str, description: str = "") -> Project:
    try:
        with transaction.atomic():
            return Project.objects.create(
                team=team, name=name.strip(), description=description, created_by=user
            )
    except IntegrityError as exc:
        raise RegistryRejected(f"A project named {name!r} already exists in this team.") from exc


def model_name_from_filename(filename: str) -> str:
    stem = Path(filename).stem
    return _NAME_RE.sub("-", stem).strip(" -.")[:100] or "model"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_model_upload(
    *, project: Project, user: User, upload: UploadedFile, name: str = ""
) -> ModelVersion:
    """Validate an uploaded ONNX file and store it as the next version of the named model.

    The file is checked on its temporary path before anything is written; a failure after
    the storage write removes the stored file, so a rejected upload leaves no row and no file.
    """
    from compress_engine import EngineError, inspect_onnx

    if upload.size > settings.MODELPRESS_MAX_UPLOAD_BYTES:
        raise RegistryRejected(too_large_message())
    if not upload.name.lower().endswith(".onnx"):
        raise RegistryRejected(
            "Only ONNX files (.onnx) can be uploaded for now. Export your model with "
            "torch.onnx.export (or tf2onnx) and upload the .onnx file."
        )
    path = Path(upload.temporary_file_path())
    try:
        info = inspect_onnx(path, max_bytes=settings.MODELPRESS_MAX_UPLOAD_BYTES)
    except EngineError as exc:
        raise RegistryRejected(str(exc)) from exc
    digest = sha256_of(path)
    model_name = (name or "").strip()[:100] or model_name_from_filename(upload.name)

    version = ModelVersion(
        project=project,
        name=model_name,
        original_filename=Path(upload.name).name[:255],
        size_bytes=upload.size,
        sha256=digest,
        opset=info.opset,
        ir_version=info.ir_version,
        producer=info.producer[:200],
        parameters=info.parameters,
        inputs=[tensor.model_dump(mode="json") for tensor in info.inputs],
        outputs=[tensor.model_dump(mode="json") for tensor in info.outputs],
        op_types=info.op_types,
        uploaded_by=user,
    )

    def assign_version() -> None:
        # Lock the project row so two concurrent uploads get distinct version numbers.
        Project.objects.select_for_update().get(pk=project.pk)
        latest = project.model_versions.filter(name=model_name).aggregate(v=Max("version"))
        version.version = (latest["v"] or 0) + 1

    _save_row_with_file(version, path, "model.onnx", before_save=assign_version)
    log.info("stored model version %s (%s bytes, sha256 %s)", version.uuid, upload.size, digest)
    return version


def ingest_dataset_upload(
    *, project: Project, user: User, upload: UploadedFile, name: str = ""
) -> Dataset:
    """Validate an uploaded `.npz` (headers only, never unpickled) and store it."""
    if upload.size > settings.MODELPRESS_MAX_UPLOAD_BYTES:
        raise RegistryRejected(too_large_message())
    if not upload.name.lower().endswith(".npz"):
        raise RegistryRejected(
            "Datasets are .npz files for now: numpy.savez(path, x=inputs, y=labels), with "
            "arrays named after the model's inputs or `x`, and optional integer labels `y`."
        )
    path = Path(upload.temporary_file_path())
    try:
        summary = summarize_npz(path)
    except NpzRejected as exc:
        raise RegistryRejected(str(exc)) from exc
    dataset = Dataset(
        project=project,
        name=(name or "").strip()[:100] or model_name_from_filename(upload.name),
        original_filename=Path(upload.name).name[:255],
        size_bytes=upload.size,
        sha256=sha256_of(path),
        samples=summary.samples,
        arrays=summary.arrays,
        label_array=summary.label_array,
        uploaded_by=user,
    )
    _save_row_with_file(dataset, path, "data.npz")
    log.info("stored dataset %s (%s samples)", dataset.uuid, dataset.samples)
    return dataset


def _save_row_with_file(
    row: ModelVersion | Dataset,
    source: Path,
    filename: str,
    before_save: Callable[[], None] | None = None,
) -> None:
    """Store the file and insert the row together: if either fails, neither is left behind."""
    stored_name: str | None = None
    try:
        with transaction.atomic():
            if before_save is not None:
                before_save()
            with source.open("rb") as handle:
                row.file.save(filename, File(handle), save=False)
            stored_name = row.file.name
            row.save()
    except BaseException:
        if stored_name:
            row.file.storage.delete(stored_name)
        raise


def too_large_message() -> str:
    limit = filesizeformat(settings.MODELPRESS_MAX_UPLOAD_BYTES)
    return f"The file is larger than the upload limit of {limit}."
