"""Registry workflows: create projects, validate and store uploaded models."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat

from accounts import audit
from accounts.models import Team, User
from accounts.quotas import QuotaExceeded, check_storage
from registry.models import Dataset, ModelVersion, Project, conversion_target
from web.queue import send_model_conversion
from web.rejections import Rejected

if TYPE_CHECKING:
    from compress_engine import InputSpec, ModelFormat, ModelInfo

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[^A-Za-z0-9._ -]+")


class RegistryRejected(Rejected):
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
    *,
    project: Project,
    user: User,
    upload: UploadedFile,
    name: str = "",
    input_shapes: str = "",
    request: HttpRequest | None = None,
) -> ModelVersion:
    """Validate an uploaded model and store it as the next version of the named model.

    The format is read from the content. A single `.onnx` is checked here and ready at once.
    Any other accepted format is stored as the version's source file and the version starts
    in `converting`; a worker converts it to ONNX (web.queue.send_model_conversion),
    enqueued once the row is committed; a language model (a zipped Hugging Face folder or
    a GGUF file, checked here as far as its metadata tells) to an onnxruntime-genai folder.
    A failure after the storage write removes the stored file, so a rejected upload leaves
    no row and no file.
    """
    from compress_engine import (
        EngineError,
        ModelFormat,
        check_llm_upload,
        detect_format,
        inspect_onnx,
        parse_input_shapes,
    )

    max_bytes = settings.MODELPRESS_MAX_UPLOAD_BYTES
    if upload.size > max_bytes:
        raise RegistryRejected(too_large_message())
    _check_quota(project, upload.size)
    path = Path(upload.temporary_file_path())
    try:
        fmt = detect_format(path, upload.name, max_bytes=max_bytes)
        specs = parse_input_shapes(input_shapes)
        info = None
        if fmt is ModelFormat.ONNX:
            info = inspect_onnx(path, max_bytes=max_bytes, external_data=False)
        elif fmt.is_llm:
            check_llm_upload(path, fmt, max_bytes=max_bytes)
    except EngineError as exc:
        raise RegistryRejected(str(exc)) from exc
    if fmt.is_llm and specs:
        raise RegistryRejected(
            f"This is a {fmt.label} file: a language model takes token ids of any length, so "
            "it needs no input shapes. Leave the input shapes field empty."
        )
    specs = _named_input_shapes(path, fmt, specs)
    if fmt.needs_input_shapes and not specs:
        raise RegistryRejected(
            f"This is a {fmt.label} file, which does not record the shapes of its inputs: give "
            "them in the input shapes field, e.g. input: 1x3x224x224 (one line per input)."
        )
    digest = sha256_of(path)
    model_name = (name or "").strip()[:100] or model_name_from_filename(upload.name)

    version = ModelVersion(
        project=project,
        name=model_name,
        original_filename=Path(upload.name).name[:255],
        source_format=fmt.value,
        sha256=digest,
        input_spec=[s.model_dump(mode="json") for s in specs],
        uploaded_by=user,
    )
    if info is not None:
        _set_model_facts(version, info)
    else:
        version.status = ModelVersion.Status.CONVERTING
        version.source_size_bytes = upload.size
        version.status_message = (
            f"Waiting for a worker to convert the {fmt.label} file to {conversion_target(fmt)}."
        )

    def assign_version() -> None:
        # Lock the project row so two concurrent uploads get distinct version numbers.
        Project.objects.select_for_update().get(pk=project.pk)
        latest = project.model_versions.filter(name=model_name).aggregate(v=Max("version"))
        version.version = (latest["v"] or 0) + 1
        if info is None:
            transaction.on_commit(lambda: _enqueue_conversion(version))
        audit.record(
            team=project.team,
            actor=user,
            action=audit.Action.UPLOADED_MODEL,
            target=version,
            detail={"file": version.original_filename, "format": fmt.value, "bytes": upload.size},
            request=request,
        )

    if info is not None:
        _save_row_with_file(version, path, "model.onnx", before_save=assign_version)
    else:
        source_name = f"source{ModelFormat(fmt).suffix}"
        _save_row_with_file(
            version, path, source_name, before_save=assign_version, field="source_file"
        )
    log.info(
        "stored model version %s (%s, %s bytes, sha256 %s, %s)",
        version.uuid,
        fmt.value,
        upload.size,
        digest,
        version.status,
    )
    return version


class InputShapesRejected(RegistryRejected):
    """Input shapes that do not fit the model's forward. `suggestion` is the field's text
    with forward's names (given shapes kept), `placeholder` an example when none were given:
    the upload form comes back with them, so a second try needs no guessing."""

    def __init__(self, message: str, *, suggestion: str = "", placeholder: str = "") -> None:
        super().__init__(message)
        self.suggestion = suggestion
        self.placeholder = placeholder


def _named_input_shapes(path: Path, fmt: ModelFormat, specs: list[InputSpec]) -> list[InputSpec]:
    """Check the given shapes against forward's arguments, read from the archive's text
    (compress_engine.forward_signature: nothing is loaded or unpickled), before any conversion
    is queued; shapes given by position get forward's names. Formats or archives whose names
    cannot be read keep the shapes as given: the worker's converter checks them."""
    from compress_engine import (
        EngineError,
        forward_signature,
        name_input_shapes,
        suggested_shapes,
    )

    signature = forward_signature(path, fmt)
    if signature is None:
        return specs
    try:
        return name_input_shapes(signature, specs, shapes_required=fmt.needs_input_shapes)
    except EngineError as exc:
        suggestion = suggested_shapes(signature, specs)
        raise InputShapesRejected(
            str(exc),
            suggestion=suggestion if specs else "",
            placeholder="" if specs else suggestion,
        ) from exc


def _set_model_facts(version: ModelVersion, info: ModelInfo) -> None:
    for field, value in model_facts(info).items():
        setattr(version, field, value)


def model_facts(info: ModelInfo) -> dict[str, object]:
    """The ModelVersion fields that describe an ONNX model, from the engine's inspection."""
    return {
        "size_bytes": info.size_bytes,
        "opset": info.opset,
        "ir_version": info.ir_version,
        "producer": info.producer[:200],
        "parameters": info.parameters,
        "inputs": [tensor.model_dump(mode="json") for tensor in info.inputs],
        "outputs": [tensor.model_dump(mode="json") for tensor in info.outputs],
        "op_types": info.op_types,
    }


def _enqueue_conversion(version: ModelVersion) -> None:
    try:
        send_model_conversion(version)
    except Exception as exc:  # broker down: say so on the version instead of converting forever
        log.exception("could not enqueue the conversion of %s", version.uuid)
        discard_conversion(version, f"Could not reach the job queue: {exc}. Upload again later.")


def discard_conversion(version: ModelVersion, message: str) -> None:
    """Mark a conversion failed and delete its stored files (source and any partial model)."""
    names = [n for n in (version.source_file.name, version.file.name) if n]
    version.fail_conversion(message)
    storage = version.source_file.storage
    for name in names:
        storage.delete(name)


def require_ready(version: ModelVersion) -> None:
    """Jobs start only on a version whose conversion to ONNX has finished."""
    if version.status == ModelVersion.Status.CONVERTING:
        raise RegistryRejected(
            f"{version} is still being converted to ONNX; start the job once it is ready."
        )
    if version.status == ModelVersion.Status.FAILED:
        raise RegistryRejected(
            f"{version} could not be converted to ONNX, so no job can run on it: "
            f"{version.status_message}"
        )


def set_input_shapes(version: ModelVersion, values: dict[str, int]) -> ModelVersion:
    """Remember concrete values for the version's dynamic input dims (keyed as
    registry.shapes.dims_to_ask names them); jobs use them unless their recipe sets
    evaluate.input_shapes."""
    from registry.shapes import ShapesRejected, shapes_from_values

    if not version.is_ready:
        raise RegistryRejected("Input shapes can be set once the model is ready.")
    try:
        shapes = shapes_from_values(version, values)
    except ShapesRejected as exc:
        raise RegistryRejected(str(exc)) from exc
    with transaction.atomic():
        version.input_shapes = shapes
        version.save(update_fields=["input_shapes"])
    return version


def ingest_dataset_upload(
    *,
    project: Project,
    user: User,
    upload: UploadedFile,
    name: str = "",
    request: HttpRequest | None = None,
) -> Dataset:
    """Validate an uploaded `.npz` (headers only, never unpickled), `.zip` of image
    folders, or `.txt` / `.jsonl` text for language models (registry.datasets) and store it."""
    from registry.datasets import DatasetRejected, apply_info, inspect_upload, stored_filename

    max_bytes = settings.MODELPRESS_MAX_UPLOAD_BYTES
    if upload.size > max_bytes:
        raise RegistryRejected(too_large_message())
    _check_quota(project, upload.size)
    path = Path(upload.temporary_file_path())
    try:
        info = inspect_upload(path, upload.name, max_bytes=max_bytes)
    except DatasetRejected as exc:
        raise RegistryRejected(str(exc)) from exc
    dataset = Dataset(
        project=project,
        name=(name or "").strip()[:100] or model_name_from_filename(upload.name),
        original_filename=Path(upload.name).name[:255],
        size_bytes=upload.size,
        sha256=sha256_of(path),
        uploaded_by=user,
    )
    apply_info(info, dataset)

    def record() -> None:
        audit.record(
            team=project.team,
            actor=user,
            action=audit.Action.UPLOADED_DATASET,
            target=dataset,
            detail={
                "file": dataset.original_filename,
                "bytes": upload.size,
                "kind": dataset.kind,
            },
            request=request,
        )

    _save_row_with_file(dataset, path, stored_filename(upload.name), before_save=record)
    log.info("stored dataset %s (%s samples)", dataset.uuid, dataset.samples)
    return dataset


def _save_row_with_file(
    row: ModelVersion | Dataset,
    source: Path,
    filename: str,
    before_save: Callable[[], None] | None = None,
    field: str = "file",
) -> None:
    """Store the file and insert the row together: if either fails, neither is left behind."""
    stored_name: str | None = None
    file = getattr(row, field)
    try:
        with transaction.atomic():
            if before_save is not None:
                before_save()
            with source.open("rb") as handle:
                file.save(filename, File(handle), save=False)
            stored_name = file.name
            row.save()
    except BaseException:
        if stored_name:
            file.storage.delete(stored_name)
        raise


def _check_quota(project: Project, incoming: int) -> None:
    try:
        check_storage(project.team, incoming)
    except QuotaExceeded as exc:
        # The team cannot take this many more bytes.
        raise RegistryRejected(str(exc), status=exc.status) from exc


def too_large_message() -> str:
    limit = filesizeformat(settings.MODELPRESS_MAX_UPLOAD_BYTES)
    return f"The file is larger than the upload limit of {limit}."
