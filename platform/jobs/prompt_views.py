"""The results page's "Ask both models" region (jobs.prompts): ask a prompt (POST), and the
list of prompts that htmx polls while one waits for its answers (GET)."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseStopPolling

from accounts.access import require_write
from jobs.access import get_job_for_user
from jobs.models import Job
from jobs.prompts import PromptForm, PromptRejected, ask_both_models, prompt_region
from jobs.views import _job_context

REGION = "jobs/htmx/llm_prompt.html#prompt-region"
LIST = "jobs/htmx/llm_prompt.html#prompt-list"


@login_required
@require_http_methods(["GET", "POST"])
def job_prompts(request: HttpRequest, job_uuid: UUID) -> HttpResponse:
    """GET: the prompt list (htmx; 286 once no listed prompt waits, which ends the polling),
    or the results page for a plain request. POST: ask both models a prompt (members)."""
    job = get_job_for_user(request.user, job_uuid)
    if request.method == "POST":
        return _ask(request, job)
    if not request.htmx:
        return redirect(_region_url(job))
    ask = prompt_region(job, request.user)
    html = render(request, LIST, {"job": job, "ask": ask}).content
    return HttpResponse(html) if ask.pending else HttpResponseStopPolling(html)


def _ask(request: HttpRequest, job: Job) -> HttpResponse:
    """Queue the prompt; htmx gets the region back (the form emptied, or with its error: as
    200, which htmx swaps), a plain post a redirect to the results, or the page with 422."""
    require_write(request.user, job.team)
    form = PromptForm(request.POST)
    if form.is_valid():
        try:
            ask_both_models(job, user=request.user, prompt=form.cleaned_data["prompt"])
        except PromptRejected as exc:
            form.add_error("prompt", str(exc))
        else:
            if not request.htmx:
                return redirect(_region_url(job))
            form = PromptForm()  # asked: the form comes back empty, the prompt in the list
    ask = prompt_region(job, request.user, form=form)
    if request.htmx:
        return render(request, REGION, {"job": job, "ask": ask})
    # The whole results page, the form holding the prompt and its error (said at the top
    # too: the form is far down the page).
    messages.error(request, "The prompt was not asked: " + " ".join(form.errors["prompt"]))
    context = {**_job_context(job, request.user), "ask": ask}
    return render(request, "jobs/detail.html", context, status=422)


def _region_url(job: Job) -> str:
    return f"{reverse('jobs-detail', args=[job.uuid])}#llm-prompt"
