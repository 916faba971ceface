"""convert_model_version: the worker side of ingest, converting an uploaded model to ONNX.

The Celery task (jobrunner.tasks.convert_model_version) is a thin wrapper, so tests call this
function directly. It runs on a worker, never in the web process: conversions import torch or
start TensorFlow, and take seconds to minutes. A language model becomes an onnxruntime-genai
folder, stored as one zip of the folder's files (`model.genai.zip`, the engine's canonical LLM
form), with its facts (`ModelVersion.llm`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from registry.models import GENAI_ZIP, ModelVersion
from registry.services import discard_conversion, model_facts
from web.storage import fetch_to_scratch, save_atomically

if TYPE_CHECKING:
    from compress_engine import IngestResult

log = logging.getLogger(__name__)

_LOG_LIMIT = 4000


def convert_model_version(version_uuid: str) -> None:
    """Convert a `converting` version's source file to the canonical ONNX form and mark it
    ready, or mark it failed with the reason and delete its stored files. Re-delivery of a
    version that is no longer converting does nothing."""
    from compress_engine import EngineError, InputSpec, ModelFormat, convert_to_onnx

    version = ModelVersion.objects.select_related("project__team").filter(uuid=version_uuid).first()
    if version is None or not version.is_converting:
        log.info("model version %s is not waiting for a conversion; skipping", version_uuid)
        return
    fmt = ModelFormat(version.source_format)
    scratch = Path(
        tempfile.mkdtemp(prefix=f"ingest-{version.uuid}-", dir=settings.MODELPRESS_SCRATCH_DIR)
    )
    stored: str | None = None
    storage = version.file.storage
    try:
        version.mark_conversion_started()
        source = fetch_to_scratch(
            version.source_file.storage, version.source_file.name, scratch / f"source{fmt.suffix}"
        )
        result = convert_to_onnx(
            source,
            fmt,
            scratch / "out",
            input_shapes=[InputSpec.model_validate(s) for s in version.input_spec],
            max_bytes=settings.MODELPRESS_MAX_UPLOAD_BYTES,
            timeout_s=settings.MODELPRESS_INGEST_TIMEOUT_SECONDS,
        )
        upload = _canonical_file(result, scratch)
        target = version.file.field.generate_filename(version, upload.name)
        stored = save_atomically(storage, target, upload)
        fields = model_facts(result.info)
        if result.llm is not None:
            fields["llm"] = result.llm.model_dump(mode="json")
        if not version.finish_conversion(
            file_name=stored, fields=fields, message=result.log[:_LOG_LIMIT]
        ):
            raise RuntimeError("the version stopped converting before the conversion finished")
        stored = None  # now owned by the ready version
        log.info("converted model version %s from %s", version.uuid, fmt.value)
    except EngineError as exc:
        _fail(version, str(exc), stored)
    except SoftTimeLimitExceeded:
        _fail(version, "The conversion ran past its time limit and was stopped.", stored)
    except Exception as exc:
        log.exception("conversion of model version %s crashed", version.uuid)
        _fail(version, f"Internal error ({type(exc).__name__}): {exc}", stored)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _canonical_file(result: IngestResult, scratch: Path) -> Path:
    """The one file stored for a converted model: the genai folder zipped (a language model),
    the .onnx zipped with its external data, or the .onnx itself."""
    from compress_engine import pack_genai_folder, pack_zip

    if result.llm is not None:
        return pack_genai_folder(result.model.parent, scratch / GENAI_ZIP)
    if result.external_data:
        pack_zip(result.model, scratch / "model.onnx.zip")
        return scratch / "model.onnx.zip"
    return result.model


def _fail(version: ModelVersion, message: str, stored: str | None) -> None:
    if stored:
        version.file.storage.delete(stored)
    try:
        version.refresh_from_db()
    except ModelVersion.DoesNotExist:
        return  # deleted meanwhile: nothing left to mark
    if version.is_converting:
        discard_conversion(version, message[:_LOG_LIMIT])
    log.info("conversion of model version %s failed: %s", version.uuid, message)
