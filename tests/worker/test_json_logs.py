"""MODELPRESS_LOG_FORMAT=json, and the job id on the records of a job's run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.conf import settings

from config.log_context import JobIdFilter, current_job_id, job_log_context
from factories import JobFactory
from jobrunner.runner import run_job

REPO = Path(__file__).resolve().parents[2]

_SCRIPT = """
import logging
import django

django.setup()
from config.log_context import job_log_context

log = logging.getLogger("jobrunner.example")
log.info("before the job")
with job_log_context("job-1234"):
    log.warning("inside the job: %s", "step 2")
    logging.getLogger("compress_engine.passes").info("from the engine")
log.info("after the job")
"""


def _run_script(log_format: str | None) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "PYTHONPATH": os.pathsep.join([str(REPO / "platform"), str(REPO / "workers")]),
    }
    env.pop("MODELPRESS_LOG_FORMAT", None)
    if log_format is not None:
        env["MODELPRESS_LOG_FORMAT"] = log_format
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_writes_one_json_object_per_record_with_the_job_id():
    result = _run_script("json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    by_message = {record["message"]: record for record in records}
    inside = by_message["inside the job: step 2"]
    assert inside["job_id"] == "job-1234"
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "jobrunner.example"
    assert datetime.fromisoformat(inside["time"]).utcoffset() == timedelta(0)
    assert by_message["from the engine"]["job_id"] == "job-1234"
    assert by_message["before the job"]["job_id"] is None
    assert by_message["after the job"]["job_id"] is None


def test_it_keeps_the_text_format_by_default():
    result = _run_script(None)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.endswith("WARNING jobrunner.example: inside the job: step 2") for line in lines)
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_it_refuses_an_unknown_log_format():
    result = _run_script("xml")
    assert result.returncode != 0
    assert "MODELPRESS_LOG_FORMAT must be text or json, got 'xml'" in result.stderr


class _Capture(logging.Handler):
    """The console handler's set-up: the JobIdFilter, then the JSON formatter of settings."""

    def __init__(self) -> None:
        super().__init__()
        self.addFilter(JobIdFilter())
        options = {k: v for k, v in settings.LOGGING["formatters"]["json"].items() if k != "()"}
        from pythonjsonlogger.json import JsonFormatter

        self.setFormatter(JsonFormatter(**options))
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def captured():
    handler = _Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler.lines
    root.removeHandler(handler)
    root.setLevel(level)


def test_it_tags_the_runner_records_with_the_job_id(db, captured):
    missing = str(uuid.uuid4())
    run_job(missing)
    (record,) = [r for r in captured if r["logger"] == "jobrunner.runner"]
    assert record["message"] == f"job {missing} does not exist; nothing to do"
    assert record["job_id"] == missing
    assert current_job_id() is None  # the context ends with the run


def test_it_tags_a_skipped_redelivery_with_its_job_id(model_version, captured):
    job = JobFactory(model_version=model_version)
    job.cancel()
    run_job(str(job.uuid))
    (record,) = [r for r in captured if r["logger"] == "jobrunner.runner"]
    assert "not queued; skipping" in record["message"]
    assert record["job_id"] == str(job.uuid)


def test_it_lets_a_record_name_its_own_job(captured):
    with job_log_context("running-job"):
        logging.getLogger("jobs.services").info("other", extra={"job_id": "other-job"})
        logging.getLogger("jobs.services").info("own")
    assert [r["job_id"] for r in captured if r["logger"] == "jobs.services"] == [
        "other-job",
        "running-job",
    ]


def test_it_names_the_job_in_the_web_services_records(model_version, owner, fast_recipe, captured):
    from jobs.services import cancel_job, create_job

    job = create_job(model_version=model_version, user=owner.user, recipe=fast_recipe)
    cancel_job(job, user=owner.user)
    records = [r for r in captured if r["logger"] == "jobs.services"]
    assert [r["message"] for r in records] == [
        f"job {job.uuid} created",
        f"job {job.uuid} cancel requested (cancelled)",
    ]
    assert {r["job_id"] for r in records} == {str(job.uuid)}
