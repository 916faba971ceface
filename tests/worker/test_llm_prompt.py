"""A prompt typed on a language-model job's results page, answered on the worker
(jobrunner.prompts.answer_prompt, the task's tested core) by the job's original model and its
compressed model.genai.zip, after a real run_job of the tiny llama."""

from __future__ import annotations

import pytest

from compress_engine import Report
from jobrunner.prompts import answer_prompt
from jobrunner.runner import run_job
from jobs.models import Job, JobPrompt
from jobs.prompts import ask_both_models
from jobs.services import preflight_job
from llm_builders import tiny_genai_dir  # noqa: F401  (session fixture)
from llm_jobs import llm_recipe, store_llm_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def scratch(settings, tmp_path):
    folder = tmp_path / "scratch"
    folder.mkdir()
    settings.MODELPRESS_SCRATCH_DIR = str(folder)
    return folder


@pytest.fixture
def finished_job(project, owner, tiny_genai_dir, tmp_path, scratch) -> Job:  # noqa: F811
    version = store_llm_version(project, owner.user, tiny_genai_dir, tmp_path)
    recipe = preflight_job(model_version=version, user=owner.user, recipe=llm_recipe(bits=4))
    job = Job.objects.create(
        team=project.team,
        project=project,
        model_version=version,
        recipe=recipe.model_dump(mode="json"),
        created_by=owner.user,
    )
    run_job(str(job.uuid), task_id="t-llm", worker="w@test")
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


def _ask(job: Job, user, text: str, capture) -> JobPrompt:
    with capture(execute=False):  # no broker: the test plays the worker
        return ask_both_models(job, user=user, prompt=text)


def test_it_answers_with_both_models_of_the_job(
    finished_job,
    member,
    tiny_genai_dir,  # noqa: F811
    tmp_path,
    scratch,
    django_capture_on_commit_callbacks,
):
    from compress_engine.llm.generate import answer
    from compress_engine.onnx_files import unpack_zip

    prompt = _ask(
        finished_job, member.user, "Tell me about lists.", django_capture_on_commit_callbacks
    )

    answer_prompt(str(prompt.uuid), worker="w@test")

    prompt.refresh_from_db()
    assert prompt.status == "done", prompt.error
    assert prompt.worker == "w@test" and prompt.started_at <= prompt.finished_at
    # The same answers the engine gives for each folder, with the threads the job was timed at.
    threads = Report.model_validate(finished_job.report).llm.threads
    local = tmp_path / "compressed.genai.zip"
    with finished_job.artifacts.get().file.open("rb") as stored:
        local.write_bytes(stored.read())
    compressed = unpack_zip(local, tmp_path / "compressed").parent
    for folder, text, tokens, tok_s in (
        (tiny_genai_dir, prompt.original_answer, prompt.original_tokens, prompt.original_tok_s),
        (compressed, prompt.compressed_answer, prompt.compressed_tokens, prompt.compressed_tok_s),
    ):
        [(want, want_tokens, _)] = answer(
            folder, ["Tell me about lists."], max_new_tokens=96, threads=threads
        )
        assert (text, tokens) == (want, want_tokens)
        assert 1 <= tokens <= 96 and tok_s > 0
    assert list(scratch.iterdir()) == []  # the fetched and unpacked zips are gone

    # A second delivery of the same task leaves the answered prompt as it is.
    finished = prompt.finished_at
    answer_prompt(str(prompt.uuid), worker="other@test")
    prompt.refresh_from_db()
    assert (prompt.status, prompt.worker, prompt.finished_at) == ("done", "w@test", finished)


def test_a_prompt_longer_than_the_context_fails_with_the_engines_reason(
    finished_job, member, scratch, django_capture_on_commit_callbacks
):
    # 500 characters of 3-byte UTF-8: well over the tiny llama's 512-token context.
    prompt = _ask(finished_job, member.user, "€" * 500, django_capture_on_commit_callbacks)

    answer_prompt(str(prompt.uuid))

    prompt.refresh_from_db()
    assert prompt.status == "failed"
    assert "tokens;" in prompt.error and "takes 512" in prompt.error
    assert list(scratch.iterdir()) == []


def test_a_job_whose_artifact_is_gone_fails_the_prompt(
    finished_job, member, scratch, django_capture_on_commit_callbacks
):
    prompt = _ask(finished_job, member.user, "Hello", django_capture_on_commit_callbacks)
    finished_job.artifacts.all().delete()

    answer_prompt(str(prompt.uuid))

    prompt.refresh_from_db()
    assert prompt.status == "failed" and "no longer holds its compressed model" in prompt.error


def test_the_task_is_registered_under_the_name_the_web_sends():
    from jobrunner.tasks import answer_job_prompt
    from web.queue import ANSWER_JOB_PROMPT, ANSWER_TIME_LIMIT_S

    assert answer_job_prompt.name == ANSWER_JOB_PROMPT
    assert answer_job_prompt.soft_time_limit == ANSWER_TIME_LIMIT_S
    assert answer_job_prompt.acks_late is True
