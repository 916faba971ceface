"""The live page of a language-model job: its planned stages are the ones the engine's run
reports (preparing text, quantizing with the recipe's bits and method, perplexity, decode
speed, memory, answers, the artifact), each report of a real run falls in its own stage's
slice, and a running job shows its current stage."""

from __future__ import annotations

import itertools
import re

import pytest
from django.urls import reverse

from compress_engine import Recipe
from factories import JobFactory
from jobs.live import current_index, stage_plan
from jobs.progress import ENGINE_END, ENGINE_START
from llm_jobs import llm_recipe

pytestmark = pytest.mark.django_db


def test_it_plans_the_stages_a_language_model_run_reports():
    recipe = Recipe.parse(llm_recipe(bits=8))
    assert [s.name for s in stage_plan(recipe)] == [
        "Fetching the inputs",
        "Preparing text",
        "Quantizing (int8 weights, rtn)",
        "Measuring perplexity",
        "Timing decode speed",
        "Measuring memory",
        "Answering the prompts",
        "Writing the artifact",
        "Storing artifacts",
    ]
    auto = Recipe.parse({**llm_recipe(), "steps": [{"quantize": {"mode": "llm-auto"}}]})
    assert stage_plan(auto)[2].name == "Searching per-layer precision"
    # Without the memory stage the answers take its slice: still no gap in the bar.
    fast = llm_recipe()
    fast["evaluate"]["llm"] = {**fast["evaluate"]["llm"], "measure_memory": False}
    plan = stage_plan(Recipe.parse(fast))
    assert "Measuring memory" not in [s.name for s in plan]
    assert all(a.hi == b.lo for a, b in itertools.pairwise(plan)) and plan[-1].hi == 1.0


def test_every_report_of_a_real_run_falls_in_its_own_planned_stage(llm_runs):
    for run in llm_runs.values():
        plan = stage_plan(Recipe.parse(run["report"]["recipe"]))
        for label, fraction in run["progress"]:
            if label == "Done":  # the engine's end, where the worker starts storing
                continue
            at = ENGINE_START + (ENGINE_END - ENGINE_START) * fraction
            assert plan[current_index(plan, at)].name == label, (label, fraction)


def test_a_running_job_shows_its_current_stage(client, owner, llm_version):
    recipe = Recipe.parse(llm_recipe(bits=4))
    job = JobFactory(model_version=llm_version, created_by=owner.user, recipe=recipe.to_dict())
    assert job.claim(worker="w@test")
    decode = next(s for s in stage_plan(recipe) if s.name == "Timing decode speed")
    job.record_progress("Timing decode speed", (decode.lo + decode.hi) / 2)
    client.force_login(owner.user)

    page = client.get(reverse("jobs-detail", args=[job.uuid])).content.decode()

    stages = re.findall(
        r'data-testid="stage" data-state="(\w+)">.*?<span class="stage-name">([^<]+)', page, re.S
    )
    states = {name.strip(): state for state, name in stages}
    assert states["Quantizing (int4 weights, rtn)"] == "done"
    assert states["Timing decode speed"] == "running"
    assert states["Answering the prompts"] == "pending"
