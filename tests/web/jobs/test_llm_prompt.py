"""Ask both models: the results page's prompt form on a succeeded language-model job (stored
the way the worker stores it, from a real run of the tiny llama), the service that queues a
prompt for a worker, and the list that polls until it is answered. Members ask; viewers read;
outsiders get 404; one waiting prompt per person per job."""

from __future__ import annotations

import html
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.urls import reverse
from django.utils import timezone

from jobs.models import Job, JobPrompt
from jobs.prompt_models import PROMPT_MAX_NEW_TOKENS
from jobs.prompts import PromptRejected, ask_both_models, prompt_region

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
PROMPT = "Name three colours."


@pytest.fixture
def no_broker(monkeypatch) -> list[str]:
    """Sent prompts' ids, instead of messages on Redis."""
    sent: list[str] = []
    monkeypatch.setattr(
        "jobs.prompts.send_job_prompt", lambda prompt, **kw: sent.append(str(prompt.uuid))
    )
    return sent


def _url(job: Job) -> str:
    return reverse("jobs-prompts", args=[job.uuid])


def _answer(
    prompt: JobPrompt, original: str = "Red, green.", compressed: str = "Red, red."
) -> None:
    generation = SimpleNamespace(
        original=original,
        compressed=compressed,
        original_tokens=4,
        compressed_tokens=5,
        original_tok_s=123.4,
        compressed_tok_s=456.7,
    )
    assert prompt.claim(worker="w@test") and prompt.answered(generation)


# --- the service ----------------------------------------------------------------------------


def test_it_queues_the_prompt_for_a_worker_on_the_cpu_queue(
    member, stored_llm_job, settings, django_capture_on_commit_callbacks
):
    from config.celery import app

    with django_capture_on_commit_callbacks(execute=True):
        prompt = ask_both_models(stored_llm_job, user=member.user, prompt=f"  {PROMPT}\n")

    prompt.refresh_from_db()
    assert (prompt.status, prompt.prompt, prompt.user) == ("queued", PROMPT, member.user)
    assert prompt.max_new_tokens == PROMPT_MAX_NEW_TOKENS == 96
    # Sent by name on the queue LLM (CPU) jobs use, with an expiry; the web never generates.
    with app.connection_for_write() as conn, conn.SimpleQueue(settings.MODELPRESS_CPU_QUEUE) as q:
        message = q.get(timeout=10)
        message.ack()
    assert message.headers["task"] == "jobs.answer_job_prompt"
    assert message.payload[0] == [str(prompt.uuid)]
    assert message.headers["expires"]


def test_one_person_has_one_waiting_prompt_per_job(member, owner, stored_llm_job, no_broker):
    first = ask_both_models(stored_llm_job, user=member.user, prompt="One")

    with pytest.raises(PromptRejected, match="still waiting") as refused:
        ask_both_models(stored_llm_job, user=member.user, prompt="Two")
    assert refused.value.status == 429
    # Someone else may ask meanwhile; the member again once theirs is answered.
    ask_both_models(stored_llm_job, user=owner.user, prompt="Three")
    _answer(first)
    ask_both_models(stored_llm_job, user=member.user, prompt="Four")
    assert list(stored_llm_job.prompts.values_list("prompt", flat=True)) == ["Four", "Three", "One"]
    assert len(no_broker) == 0  # on commit only: the test's transaction never commits


def test_the_database_keeps_the_bound_when_two_posts_race(member, stored_llm_job):
    JobPrompt.objects.create(job=stored_llm_job, user=member.user, prompt="One")
    with pytest.raises(IntegrityError):
        JobPrompt.objects.create(job=stored_llm_job, user=member.user, prompt="Two")


@pytest.mark.parametrize(
    ("prompt", "message"), [("   ", "Type a prompt"), ("x" * 501, "501 characters")]
)
def test_it_refuses_an_empty_or_too_long_prompt(member, stored_llm_job, no_broker, prompt, message):
    with pytest.raises(PromptRejected, match=message):
        ask_both_models(stored_llm_job, user=member.user, prompt=prompt)
    assert not stored_llm_job.prompts.exists()


def test_a_viewer_cannot_ask(viewer, stored_llm_job, no_broker):
    with pytest.raises(PermissionDenied):
        ask_both_models(stored_llm_job, user=viewer.user, prompt=PROMPT)


def test_only_a_succeeded_language_model_job_takes_prompts(
    member, llm_version, owner, stored_llm_job, model_version, fast_recipe, no_broker
):
    running = Job.objects.create(
        team=llm_version.project.team,
        project=llm_version.project,
        model_version=llm_version,
        recipe=stored_llm_job.recipe,
        created_by=owner.user,
    )
    onnx = Job.objects.create(
        team=model_version.project.team,
        project=model_version.project,
        model_version=model_version,
        recipe=fast_recipe,
        created_by=owner.user,
    )
    assert onnx.claim(worker="w") and onnx.succeed({"not": "an llm report"})
    for job, message in ((running, "once the job has succeeded"), (onnx, "language-model jobs")):
        with pytest.raises(PromptRejected, match=message):
            ask_both_models(job, user=member.user, prompt=PROMPT)


def test_a_prompt_no_worker_answered_expires_and_frees_its_asker(member, stored_llm_job, no_broker):
    stale = ask_both_models(stored_llm_job, user=member.user, prompt="Old")
    JobPrompt.objects.filter(pk=stale.pk).update(created_at=timezone.now() - timedelta(minutes=31))

    ask_both_models(stored_llm_job, user=member.user, prompt="New")

    stale.refresh_from_db()
    assert stale.status == "failed" and "No worker answered within 30 minutes" in stale.error
    # A late delivery of its task does nothing.
    assert not stale.claim(worker="w@test")


def test_a_broker_that_cannot_be_reached_fails_the_prompt(
    member, stored_llm_job, monkeypatch, django_capture_on_commit_callbacks
):
    def down(prompt, **kw):
        raise ConnectionError("redis is down")

    monkeypatch.setattr("jobs.prompts.send_job_prompt", down)
    with django_capture_on_commit_callbacks(execute=True):
        prompt = ask_both_models(stored_llm_job, user=member.user, prompt=PROMPT)
    prompt.refresh_from_db()
    assert (
        prompt.status == "failed" and "Could not reach the job queue: redis is down" in prompt.error
    )


# --- the views ------------------------------------------------------------------------------


def test_the_form_posts_by_htmx_and_the_region_comes_back_waiting(
    client, member, stored_llm_job, no_broker, django_capture_on_commit_callbacks
):
    client.force_login(member.user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url(stored_llm_job), {"prompt": PROMPT}, **HTMX)

    assert response.status_code == 200
    body = html.unescape(response.content.decode())
    [prompt] = stored_llm_job.prompts.all()
    assert no_broker == [str(prompt.uuid)]
    assert body.strip().startswith('<div id="llm-prompt" data-testid="llm-prompt">')
    assert f"<strong>Prompt:</strong> {PROMPT}" in body
    assert 'data-status="queued"' in body and "Waiting for a worker…" in body
    # The list (not the form) polls while the prompt waits; the form comes back empty.
    listing = body.split('id="llm-prompt-list"', 1)[1].split(">", 1)[0]
    assert f'hx-get="{_url(stored_llm_job)}" hx-trigger="every 2s"' in listing
    textarea = body.split("<textarea", 1)[1].split("</textarea>", 1)[0]
    assert textarea.rstrip("\n").endswith(">") and 'maxlength="500"' in textarea


def test_the_list_polls_until_the_answers_are_in_then_answers_286(
    client, member, stored_llm_job, no_broker
):
    prompt = ask_both_models(stored_llm_job, user=member.user, prompt=PROMPT)
    client.force_login(member.user)

    waiting = client.get(_url(stored_llm_job), **HTMX)
    assert waiting.status_code == 200 and b'hx-trigger="every 2s"' in waiting.content

    _answer(prompt)
    done = client.get(_url(stored_llm_job), **HTMX)
    assert done.status_code == 286
    body = html.unescape(done.content.decode())
    assert "hx-trigger" not in body and 'data-status="done"' in body
    original = body.split('data-testid="llm-prompt-original"', 1)[1].split("</div>", 1)[0]
    compressed = body.split('data-testid="llm-prompt-compressed"', 1)[1].split("</div>", 1)[0]
    assert '<pre class="llm-answer">Red, green.</pre>' in original
    assert "123.4 tokens/s, 4 tokens" in original
    assert '<pre class="llm-answer">Red, red.</pre>' in compressed
    assert "456.7 tokens/s, 5 tokens" in compressed


def test_a_failed_prompt_says_why(client, member, stored_llm_job, no_broker):
    prompt = ask_both_models(stored_llm_job, user=member.user, prompt=PROMPT)
    prompt.fail("the prompt is 900 tokens; model takes 512.")
    client.force_login(member.user)
    response = client.get(_url(stored_llm_job), **HTMX)
    assert response.status_code == 286
    assert b"Not answered: the prompt is 900 tokens" in response.content


def test_a_refused_htmx_post_keeps_the_prompt_and_says_why(
    client, member, stored_llm_job, no_broker
):
    ask_both_models(stored_llm_job, user=member.user, prompt="One")
    client.force_login(member.user)
    response = client.post(_url(stored_llm_job), {"prompt": "Two & three"}, **HTMX)
    assert response.status_code == 200  # htmx swaps 2xx only
    body = response.content.decode()
    assert "Two &amp; three</textarea>" in body
    assert 'data-testid="llm-prompt-error">Your previous prompt on this job is still' in body
    assert stored_llm_job.prompts.count() == 1


def test_without_javascript_the_form_posts_and_redirects_to_the_results(
    client, member, stored_llm_job, no_broker
):
    client.force_login(member.user)
    response = client.post(_url(stored_llm_job), {"prompt": PROMPT})
    assert response.status_code == 302
    assert (
        response["Location"] == reverse("jobs-detail", args=[stored_llm_job.uuid]) + "#llm-prompt"
    )
    page = html.unescape(client.get(response["Location"]).content.decode())
    region = page.split('data-testid="llm-prompt"', 1)[1]
    assert f"<strong>Prompt:</strong> {PROMPT}" in region
    # A real form: action and CSRF token for a plain post.
    assert f'action="{_url(stored_llm_job)}"' in region and 'name="csrfmiddlewaretoken"' in region
    # A plain GET of the fragment's URL goes to the page.
    assert client.get(_url(stored_llm_job))["Location"].endswith("#llm-prompt")


def test_without_javascript_a_refusal_shows_the_page_with_the_error(
    client, member, stored_llm_job, no_broker
):
    client.force_login(member.user)
    response = client.post(_url(stored_llm_job), {"prompt": "x" * 501})
    assert response.status_code == 422
    body = html.unescape(response.content.decode())
    assert "The prompt was not asked:" in body and "at most 500 characters" in body
    assert 'data-testid="llm-figures"' in body  # the whole results page
    assert not stored_llm_job.prompts.exists()


def test_it_lists_the_newest_prompts_first_a_handful_of_them(client, owner, member, stored_llm_job):
    for i in range(7):
        _answer(
            JobPrompt.objects.create(job=stored_llm_job, user=member.user, prompt=f"Prompt {i}")
        )
    client.force_login(owner.user)
    page = html.unescape(
        client.get(reverse("jobs-detail", args=[stored_llm_job.uuid])).content.decode()
    )
    shown = [
        part.split("</strong> ", 1)[1].split("\n", 1)[0].strip()
        for part in page.split('data-testid="llm-prompt-answer"')[1:]
    ]
    assert shown == [f"Prompt {i}" for i in (6, 5, 4, 3, 2)]
    assert "The 5 newest of 7 prompts." in page
    assert f"asked by {member.user.username}" in page


def test_a_viewer_reads_the_answers_but_gets_no_form(client, viewer, member, stored_llm_job):
    _answer(JobPrompt.objects.create(job=stored_llm_job, user=member.user, prompt=PROMPT))
    client.force_login(viewer.user)

    page = client.get(reverse("jobs-detail", args=[stored_llm_job.uuid])).content.decode()
    region = page.split('data-testid="llm-prompt"', 1)[1]
    assert 'data-testid="llm-prompt-form"' not in region
    assert 'data-testid="llm-prompt-viewer"' in region and "Red, green." in region
    assert client.post(_url(stored_llm_job), {"prompt": "Mine?"}, **HTMX).status_code == 403
    assert stored_llm_job.prompts.count() == 1
    assert client.get(_url(stored_llm_job), **HTMX).status_code == 286


def test_an_outsider_gets_404_and_asks_nothing(client, outsider, stored_llm_job, no_broker):
    client.force_login(outsider.user)
    assert client.get(_url(stored_llm_job), **HTMX).status_code == 404
    assert client.post(_url(stored_llm_job), {"prompt": PROMPT}, **HTMX).status_code == 404
    assert client.post(_url(stored_llm_job), {"prompt": PROMPT}).status_code == 404
    assert not stored_llm_job.prompts.exists() and no_broker == []


def test_a_job_without_its_genai_zip_shows_why_it_takes_no_prompts(
    client, member, llm_version, succeeded_llm_job, llm_runs
):
    job = succeeded_llm_job(llm_version, llm_runs["int4"]["report"])  # no artifact stored
    client.force_login(member.user)
    region = prompt_region(job, member.user)
    assert not region.can_ask and "kept no compressed language model" in (region.refusal or "")
    response = client.post(_url(job), {"prompt": PROMPT}, **HTMX)
    assert b"kept no compressed language model" in response.content
    assert not job.prompts.exists()
