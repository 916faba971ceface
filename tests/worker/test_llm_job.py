"""A language-model job through the worker's real path (run_job: fetch, the engine in its job
process, store): the tiny llama's stored genai zip with a text dataset, to a stored, loadable
model.genai.zip and an LLM report; the live page's stages are the ones the run reported."""

from __future__ import annotations

import zipfile

import pytest

from jobrunner.runner import run_job
from jobs.models import Artifact, Job
from jobs.services import preflight_job
from llm_builders import tiny_genai_dir  # noqa: F401  (session fixture)
from llm_jobs import ingest_text_dataset, llm_recipe, store_llm_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def llm_job(project, owner, tiny_genai_dir, tmp_path):  # noqa: F811
    version = store_llm_version(project, owner.user, tiny_genai_dir, tmp_path)
    dataset = ingest_text_dataset(project, owner, tmp_path)
    recipe = preflight_job(
        model_version=version, user=owner.user, recipe=llm_recipe(bits=4), dataset=dataset
    )
    return Job.objects.create(
        team=project.team,
        project=project,
        model_version=version,
        dataset=dataset,
        recipe=recipe.model_dump(mode="json"),
        created_by=owner.user,
    )


def test_it_runs_a_language_model_job_to_a_stored_genai_zip(llm_job, tmp_path):
    from compress_engine import Report
    from compress_engine.llm.genai_check import check_genai_folder
    from compress_engine.onnx_files import unpack_zip

    run_job(str(llm_job.uuid), task_id="t-llm", worker="w@test")

    llm_job.refresh_from_db()
    assert llm_job.status == "succeeded", llm_job.error
    report = Report.model_validate(llm_job.report)
    llm = report.llm
    assert llm is not None and llm.bits == 4 and llm.form == "MatMulNBits"
    # The job's own text was used, labelled with the uploaded file's name (fetched under it,
    # with its .txt suffix).
    assert llm.text_data == "prose.txt"
    assert llm.evaluation_windows == 4 and llm.window_tokens == 64
    assert llm.result.size_bytes < llm.original.size_bytes / 2
    [artifact] = Artifact.objects.filter(job=llm_job)
    assert (artifact.name, artifact.format) == ("model.genai.zip", "genai-zip")
    assert artifact.sha256 == report.artifacts[0].sha256
    local = tmp_path / "downloaded.genai.zip"
    with artifact.file.open("rb") as stored:
        local.write_bytes(stored.read())
    with zipfile.ZipFile(local) as zf:
        assert {"genai_config.json", "model.onnx", "chat.py"} <= set(zf.namelist())
    # onnxruntime-genai loads the stored file as it is and generates with it.
    assert check_genai_folder(unpack_zip(local, tmp_path / "unzipped").parent).strip()


def test_its_live_stages_are_the_ones_the_engine_reported(llm_job):
    from jobs.live import job_plan, stage_rows

    run_job(str(llm_job.uuid), task_id="t-llm", worker="w@test")

    llm_job.refresh_from_db()
    assert llm_job.status == "succeeded", llm_job.error
    planned = [stage.name for stage in job_plan(llm_job)]
    assert planned == [
        "Fetching the inputs",
        "Preparing text",
        "Quantizing (int4 weights, rtn)",
        "Measuring perplexity",
        "Timing decode speed",
        "Measuring memory",
        "Answering the prompts",
        "Writing the artifact",
        "Storing artifacts",
    ]
    # Every label the run wrote to the log is a planned stage (bar the worker's own fetches
    # and the engine's closing "Done").
    reported = {line.split("  ", 1)[1].split(":")[0] for line in llm_job.log_tail.splitlines()}
    assert reported - {"Fetching the model", "Fetching the dataset", "Done"} <= set(planned)
    assert set(planned[1:-1]) <= reported
    assert all(row.state == "done" for row in stage_rows(llm_job))
