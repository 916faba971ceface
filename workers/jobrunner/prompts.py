"""answer_prompt: a prompt typed on a language-model job's results page (jobs.JobPrompt),
answered by the job's original model (its model version's stored genai zip) and its compressed
one (the job's model.genai.zip), through the engine's face.

The task (jobrunner.tasks.answer_job_prompt) is a thin wrapper, so tests call this directly.
It runs in the worker process, like ingest's generation check: these are models the platform
built and checked itself (the upload was converted by a worker, the artifact was loaded and
generated with before it was offered), and the task's time limit bounds the run.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from config.log_context import job_log_context
from jobs.models import Job, JobPrompt
from jobs.prompts import GENAI_FORMAT
from web.storage import fetch_to_scratch

log = logging.getLogger(__name__)


def answer_prompt(prompt_uuid: str, *, worker: str = "") -> None:
    """Claim a queued prompt, answer it with both models and store the answers, or fail it with
    a reason the asker can read. A prompt that is not queued (a re-delivery, or one that
    expired while it waited) is left as it is."""
    prompt = JobPrompt.objects.select_related("job__model_version").filter(uuid=prompt_uuid).first()
    if prompt is None:
        log.warning("prompt %s does not exist; nothing to do", prompt_uuid)
        return
    with job_log_context(prompt.job.uuid):  # its log records carry the job's id
        _run(prompt, worker)


def _run(prompt: JobPrompt, worker: str) -> None:
    from compress_engine import EngineError

    if not prompt.claim(worker=worker or socket.gethostname()):
        log.info("prompt %s is %s, not queued; skipping", prompt.uuid, prompt.status)
        return
    scratch = Path(
        tempfile.mkdtemp(
            prefix=f"prompt-{prompt.uuid}-", dir=settings.MODELPRESS_SCRATCH_DIR or None
        )
    )
    try:
        generation = _answer(prompt, scratch)
        if not prompt.answered(generation):
            log.info("prompt %s left the running state before it was answered", prompt.uuid)
    except EngineError as exc:
        prompt.fail(str(exc))
    except SoftTimeLimitExceeded:
        prompt.fail("Answering took longer than its time limit and was stopped; ask again.")
    except Exception as exc:
        log.exception("prompt %s crashed", prompt.uuid)
        prompt.fail(f"Internal error ({type(exc).__name__}): {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _answer(prompt: JobPrompt, scratch: Path):
    """Fetch both zips into scratch and answer (a compress_engine Generation)."""
    from compress_engine import EngineError, answer_side_by_side

    job = prompt.job
    artifact = job.artifacts.filter(format=GENAI_FORMAT).first()
    if job.status != Job.Status.SUCCEEDED or artifact is None:
        raise EngineError("The job no longer holds its compressed model (model.genai.zip).")
    version = job.model_version
    original = fetch_to_scratch(
        version.file.storage, version.file.name, scratch / f"original{version.stored_suffix}"
    )
    compressed = fetch_to_scratch(
        artifact.file.storage, artifact.file.name, scratch / "compressed.genai.zip"
    )
    return answer_side_by_side(
        original,
        compressed,
        prompt.prompt,
        max_new_tokens=prompt.max_new_tokens,
        threads=_threads(job),
        scratch=scratch,
    )


def _threads(job: Job) -> int | None:
    """The thread count the job's own answers were timed with, so the tokens/s under a typed
    prompt compare with those of the results page's prompts."""
    from compress_engine import Report

    llm = Report.model_validate(job.report).llm if job.report else None
    return llm.threads if llm is not None else None
