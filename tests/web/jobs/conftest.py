"""Reports for the dashboard and compare tests: one real engine run per session, varied per
job. Every variant goes through compress_engine.Report, so its ratios are recomputed exactly
as a worker stores them."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from llm_builders import tiny_genai_dir  # noqa: F401  (session fixture, for the LLM jobs)

REPORT_RECIPE = {
    "version": 1,
    "steps": [{"quantize": {"mode": "dynamic-int8"}}],
    "evaluate": {"latency_runs": 3, "warmup": 1, "batch_sizes": [], "fidelity_samples": 8},
}


@pytest.fixture(scope="session")
def base_report(tiny_cnn_onnx, pattern_npz, tmp_path_factory) -> dict[str, Any]:
    """A real report of a labelled run (so it has accuracy), as stored on a job."""
    from compress_engine import compress

    out = tmp_path_factory.mktemp("dashboard-run") / "out"
    return compress(tiny_cnn_onnx, REPORT_RECIPE, data=pattern_npz, out_dir=out).model_dump(
        mode="json"
    )


@pytest.fixture
def report_variant(base_report) -> Callable[..., dict[str, Any]]:
    """The base report with the result's size, p50 latency, top-1 (None: no labels) and
    cosine replaced."""
    from compress_engine import Report

    def make(*, size: int, p50: float, top1: float | None, cosine: float = 0.999) -> dict:
        report = copy.deepcopy(base_report)
        result = report["result"]
        result["size_bytes"] = size
        # The spread too: the base run's p90/p99 come from a (maybe busy) machine, and the
        # compare page counts differences inside that spread as ties.
        for latency in [result["latency"], *result["latency_by_batch"].values()]:
            latency.update(p50_ms=p50, p90_ms=p50 * 1.05, p99_ms=p50 * 1.1)
        report["fidelity"]["summary"]["cosine_similarity"] = cosine
        if top1 is None:
            report["accuracy"] = None
        else:
            report["accuracy"]["result_top1"] = top1
            report["accuracy"]["drop_points"] = 100 * (report["accuracy"]["original_top1"] - top1)
        return Report.model_validate(report).model_dump(mode="json")

    return make


@pytest.fixture
def succeeded_job() -> Callable[..., Any]:
    """A job of `version` that ran to success with `report`, through the model's transitions."""
    from factories import JobFactory

    def make(version, report: dict[str, Any], **fields: Any):
        job = JobFactory(model_version=version, recipe=REPORT_RECIPE, **fields)
        assert job.claim(worker="w@test") and job.succeed(report)
        return job

    return make


@pytest.fixture
def unlabelled_dataset(project, owner, tmp_path):
    import numpy as np

    from model_builders import pattern_dataset
    from registry.services import ingest_dataset_upload

    x, _y = pattern_dataset(64, seed=3)
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=x)
    from conftest import _ingest

    return _ingest(ingest_dataset_upload, project, owner, path)


# --- language models -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llm_runs(tiny_genai_dir, tmp_path_factory) -> dict[str, dict[str, Any]]:  # noqa: F811
    """Real engine runs on the tiny llama, as stored on jobs: `int4` (round to nearest, the
    embedding and lm_head at int8) and `int8`, each {"report": dict, "out": folder,
    "progress": [(label, fraction), ...]}, with the FAST measurement settings."""
    from compress_engine import compress
    from llm_builders import zip_folder
    from llm_jobs import llm_recipe

    folder = tmp_path_factory.mktemp("llm-jobs")
    model = zip_folder(tiny_genai_dir, folder / "model.genai.zip")
    runs = {}
    for name, quantize in (("int4", {"bits": 4}), ("int8", {"bits": 8})):
        progress: list[tuple[str, float]] = []
        out = folder / f"out-{name}"
        report = compress(
            model,
            llm_recipe(**quantize),
            out_dir=out,
            progress=lambda s, f, progress=progress: progress.append((s, f)),
        )
        runs[name] = {"report": report.model_dump(mode="json"), "out": out, "progress": progress}
    return runs


@pytest.fixture
def llm_version(project, owner, tiny_genai_dir, tmp_path):  # noqa: F811
    """A ready language-model version (the tiny llama's genai folder, zipped)."""
    from llm_jobs import store_llm_version

    return store_llm_version(project, owner.user, tiny_genai_dir, tmp_path)


@pytest.fixture
def text_dataset(project, owner, tmp_path):
    from llm_jobs import ingest_text_dataset

    return ingest_text_dataset(project, owner, tmp_path)


@pytest.fixture
def succeeded_llm_job() -> Callable[..., Any]:
    """A job of an LLM `version` that ran to success with `report` (its recipe the report's)."""
    from factories import JobFactory

    def make(version, report: dict[str, Any], **fields: Any):
        job = JobFactory(model_version=version, recipe=report["recipe"], **fields)
        assert job.claim(worker="w@test") and job.succeed(report)
        return job

    return make


@pytest.fixture
def stored_llm_job(llm_version, owner, llm_runs):
    """A succeeded int4 job of `llm_version` with its model.genai.zip stored, as run_job
    stores it (the downloads and the prompt form read the stored file)."""
    from compress_engine import Report
    from jobrunner.runner import _store_results
    from jobs.models import Job

    run = llm_runs["int4"]
    report = Report.model_validate(run["report"])
    job = Job.objects.create(
        team=llm_version.project.team,
        project=llm_version.project,
        model_version=llm_version,
        recipe=report.recipe,
        created_by=owner.user,
    )
    assert job.claim(worker="w@test")
    _store_results(job, report, run["out"])
    return job
