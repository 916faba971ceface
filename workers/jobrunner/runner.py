"""run_job: claim a job, run the engine in a job process under memory and time limits (see
engine_process), store artifacts, record the outcome.

The task is a thin wrapper around this function, so tests call it directly.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.log_context import with_job_log_context
from jobrunner.engine_process import (
    EngineCall,
    EngineCrashed,
    EngineProcessFailed,
    Limits,
    default_memory_limit_bytes,
    run_engine,
    time_limit_message,
)
from jobs.models import Artifact, Job
from jobs.progress import ENGINE_END, ENGINE_START
from jobs.services import teacher_uuids
from registry.models import ModelVersion
from web.storage import delete_stored, fetch_to_scratch, save_atomically

if TYPE_CHECKING:
    from compress_engine import TrainingPoint

log = logging.getLogger(__name__)

# How often a cancellation is looked for while the engine runs, besides at every progress
# report: a long step may report none for minutes.
_CANCEL_POLL_SECONDS = 1.0


class JobCancelled(Exception):
    """Raised from the progress callback when the user asked to cancel."""


class ArtifactNotStored(Exception):
    """Writing an artifact to storage failed (full, unreachable, no permission); the message
    is the job's error."""

    def __init__(self, name: str, exc: Exception) -> None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = "the storage is full (no space left on the device or over quota)"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        super().__init__(
            f"Could not store the artifact {name}: {reason}. No artifact of this job was kept; "
            "make room on (or repair) the storage, then start the job again."
        )


class _JobHeartbeat:
    """Touches job.heartbeat_at on a timer, so a long engine step with no progress callbacks
    is not mistaken for a dead worker by the reaper."""

    def __init__(self, job: Job, interval: float) -> None:
        self._job_pk = job.pk
        self._attempt = job.run_attempt
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)

    def __enter__(self) -> _JobHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(self._interval):
                Job.objects.filter(
                    pk=self._job_pk, status=Job.Status.RUNNING, attempts=self._attempt
                ).update(heartbeat_at=timezone.now())
        except Exception:
            log.exception("job heartbeat failed")
        finally:
            connection.close()


@with_job_log_context  # every record logged during the run carries job_id
def run_job(job_uuid: str, *, task_id: str = "", worker: str = "") -> None:
    job = (
        Job.objects.select_related("model_version", "team", "dataset").filter(uuid=job_uuid).first()
    )
    if job is None:
        log.warning("job %s does not exist; nothing to do", job_uuid)
        return
    if not job.claim(worker=worker or socket.gethostname(), task_id=task_id, device=_device()):
        # Re-delivery of a job that already ran (or was cancelled): idempotent no-op.
        log.info("job %s is %s, not queued; skipping", job.uuid, job.status)
        return

    # The time limit counts from the claim, as Celery's soft limit counts from the task's start.
    limits = Limits(
        memory_bytes=_memory_limit_bytes(),
        time_seconds=settings.CELERY_TASK_SOFT_TIME_LIMIT,
        started_at=time.monotonic(),
    )
    scratch = Path(tempfile.mkdtemp(prefix=f"job-{job.uuid}-", dir=settings.MODELPRESS_SCRATCH_DIR))
    try:
        with _JobHeartbeat(job, interval=settings.MODELPRESS_WORKER_HEARTBEAT_SECONDS):
            _execute(job, scratch, limits)
    except JobCancelled:
        job.mark_cancelled()
        log.info("job %s cancelled", job.uuid)
    except SoftTimeLimitExceeded:
        # Celery's own soft limit (the same number) when it fires first; the engine process
        # is already stopped by run_engine on the way out.
        job.fail(time_limit_message(settings.CELERY_TASK_SOFT_TIME_LIMIT))
    except (ArtifactNotStored, EngineProcessFailed) as exc:
        log.warning("job %s: %s", job.uuid, exc)
        job.fail(str(exc))
    except EngineCrashed as exc:
        log.error("job %s crashed in the engine process:\n%s", job.uuid, exc.child_traceback)
        job.fail(f"Internal error ({exc.type_name}): {exc.message}")
    except Exception as exc:
        from compress_engine import EngineError

        if isinstance(exc, EngineError):
            job.fail(str(exc))
        else:
            log.exception("job %s crashed", job.uuid)
            job.fail(f"Internal error ({type(exc).__name__}): {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _memory_limit_bytes() -> int:
    limit_mb = settings.MODELPRESS_JOB_MEMORY_LIMIT_MB
    return limit_mb * 1024**2 if limit_mb > 0 else default_memory_limit_bytes()


def _device() -> str:
    """This worker's hardware in one line, recorded on the job it claims."""
    from compress_engine import probe_worker_device

    return probe_worker_device().summary


def _report(job: Job, stage: str, fraction: float) -> None:
    """Stage and progress on the row (with the heartbeat), and the live page's log tail."""
    job.record_progress(stage, fraction)
    job.note_progress(stage, fraction)


def _execute(job: Job, scratch: Path, limits: Limits) -> None:
    def check_cancel() -> None:
        if job.is_cancel_requested():
            raise JobCancelled()

    def progress(stage: str, fraction: float) -> None:
        _report(job, stage, ENGINE_START + (ENGINE_END - ENGINE_START) * fraction)
        check_cancel()

    def on_training(point: TrainingPoint) -> None:
        job.record_training(point.model_dump(mode="json"))
        check_cancel()

    _report(job, "Fetching the model", 0.0)
    version = job.model_version
    model_path = fetch_to_scratch(
        version.file.storage, version.file.name, scratch / f"model{version.stored_suffix}"
    )
    data_path = None
    if job.dataset is not None:
        _report(job, "Fetching the dataset", 0.02)
        data_path = fetch_to_scratch(
            job.dataset.file.storage, job.dataset.file.name, _dataset_scratch_path(job, scratch)
        )
    teachers = _fetch_teachers(job, scratch)
    recipe = job.recipe_obj.model_copy(deep=True)  # edited below; the job's stays as stored
    # (A language model takes token ids of any length: it has no shapes to choose.)
    if version.input_shapes and not recipe.evaluate.input_shapes and not recipe.is_llm:
        # The concrete dims chosen once on the version page, unless the recipe sets its own.
        recipe.evaluate.input_shapes = version.evaluation_shapes(recipe.evaluate.batch_size)
    out_dir = scratch / "out"
    # In a child process under the job's memory and time limits; this process keeps every
    # database and storage call.
    report = run_engine(
        EngineCall(
            model=model_path,
            recipe=recipe.model_dump(mode="json"),
            out_dir=out_dir,
            data=data_path,
            teachers=teachers,
        ),
        limits=limits,
        progress=progress,
        on_training=on_training,
        poll=check_cancel,
        poll_seconds=_CANCEL_POLL_SECONDS,
    )
    _report(job, "Storing artifacts", ENGINE_END)
    check_cancel()
    _store_results(job, report, out_dir)


# What a scratch file name may hold of an uploaded file's name.
_UNSAFE_NAME = re.compile(r"[^\w. -]+")  # \w: letters and digits of any script, _


def _dataset_scratch_path(job: Job, scratch: Path) -> Path:
    """Where the job's dataset is fetched to: named after the uploaded file (made safe), so
    what the engine says about the data names it (a language model's report labels its text
    with the file's name), with the stored suffix, from which the engine reads the format
    (.zip image folders, .npz, or .txt / .jsonl text). In a folder of its own, so no name
    meets the model's or a teacher's."""
    dataset = job.dataset
    assert dataset is not None
    stem = Path(dataset.original_filename).name
    suffix = dataset.stored_suffix
    if stem.lower().endswith(suffix):
        stem = stem[: -len(suffix)]
    stem = _UNSAFE_NAME.sub("-", stem).strip(" -.")[:100]
    if not stem:
        stem = _UNSAFE_NAME.sub("-", dataset.name).strip(" -.")[:100] or "data"
    return scratch / "dataset" / f"{stem}{suffix}"


def _fetch_teachers(job: Job, scratch: Path) -> dict[str, Path]:
    """The model versions the recipe distils from, keyed as the recipe names them.

    create_job checked them; they are looked up again within the job's team, because a
    version may have been deleted (or the recipe edited in the database) since.
    """
    from compress_engine import EngineError

    teachers: dict[str, Path] = {}
    for i, name in enumerate(teacher_uuids(job.recipe_obj)):
        try:
            version_uuid = uuid.UUID(name)
        except ValueError:
            raise EngineError(f"distill.teacher {name!r} is not a model version id.") from None
        version = ModelVersion.objects.filter(project__team=job.team, uuid=version_uuid).first()
        if version is None:
            raise EngineError(
                f"The teacher model version {name} no longer exists in this team; start the job "
                "again with another teacher."
            )
        _report(job, f"Fetching the teacher {version}", 0.03)
        teachers[name] = fetch_to_scratch(
            version.file.storage, version.file.name, scratch / f"teacher{i}{version.stored_suffix}"
        )
    return teachers


def _store_results(job: Job, report, out_dir: Path) -> None:
    """Write every offered artifact, then record them and the report in one transaction.

    Only `report.files` (status ok) exist in out_dir; failed exports stay in the report, with
    their reason, and get no Artifact row. If anything fails (or the job left `running`
    meanwhile), the stored files are removed, so a job never points at a partial artifact set.
    """
    stored: list[str] = []
    storage = Artifact._meta.get_field("file").storage
    try:
        artifacts = []
        for info in report.files:
            artifact = Artifact(
                job=job,
                name=info.name,
                format=info.format,
                precision=info.precision,
                size_bytes=info.size_bytes,
                sha256=info.sha256,
            )
            target = artifact.file.field.generate_filename(artifact, info.name)
            try:
                artifact.file.name = save_atomically(storage, target, out_dir / info.name)
            except Exception as exc:
                raise ArtifactNotStored(info.name, exc) from exc
            stored.append(artifact.file.name)
            artifacts.append(artifact)
        with transaction.atomic():
            Artifact.objects.bulk_create(artifacts)
            if not job.succeed(report.model_dump(mode="json")):
                raise RuntimeError(f"job left the running state ({job.status}) before finishing")
    except BaseException:
        for name in stored:
            delete_stored(storage, name)
        raise
