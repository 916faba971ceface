"""Ask both models: a prompt typed on a succeeded language-model job's results page, queued for
a worker (jobrunner.prompts answers it with the original and the compressed model; the web
process never generates), and the region of the page that shows the form and the answers.

Who may ask: members and above, like starting a job (ROLE_POWERS), because an answer costs a
worker's time; viewers read the answers the team has asked for. Abuse is bounded by one
waiting prompt per person per job (a database constraint), PROMPT_MAX_NEW_TOKENS new tokens per
model, the engine's limit on a prompt's length, and a task that expires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django import forms
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from accounts.access import can_write, require_write
from accounts.models import User
from compress_engine import LLM_PROMPT_MAX_CHARS
from jobs.models import Job
from jobs.prompt_models import PENDING_EXPIRY, PROMPT_MAX_NEW_TOKENS, JobPrompt
from jobs.routing import cpu_queue
from web.queue import send_job_prompt
from web.rejections import Rejected

log = logging.getLogger(__name__)

# Prompts listed under the form, newest first.
RECENT_PROMPTS = 5
GENAI_FORMAT = "genai-zip"
ONE_AT_A_TIME = (
    "Your previous prompt on this job is still waiting for its answers: ask the next one when "
    "it has been answered."
)


class PromptRejected(Rejected):
    """A prompt that was not queued; the message is shown to the user."""


class PromptForm(forms.Form):
    prompt = forms.CharField(
        label="Prompt",
        min_length=1,
        max_length=LLM_PROMPT_MAX_CHARS,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 2, "id": "llm-prompt-text"}),
        help_text=(
            f"Up to {LLM_PROMPT_MAX_CHARS} characters, sent as one user turn with the model's "
            f"chat template; each model writes at most {PROMPT_MAX_NEW_TOKENS} tokens."
        ),
        error_messages={"required": "Type a prompt to ask both models."},
    )


def prompt_refusal(job: Job) -> str | None:
    """Why this job takes no prompts; None when it does."""
    if job.status != Job.Status.SUCCEEDED or not job.report:
        return "Prompts are answered once the job has succeeded."
    if not job.model_version.is_llm or not job.report.get("llm"):
        return "Only language-model jobs answer prompts."
    if not job.artifacts.filter(format=GENAI_FORMAT).exists():
        return "This job kept no compressed language model (model.genai.zip) to ask."
    return None


def ask_both_models(job: Job, *, user: User, prompt: str) -> JobPrompt:
    """Queue `prompt` for the job's original and compressed models once the row is committed.
    PermissionDenied for viewers; PromptRejected for a job that takes no prompts, an empty or
    too long prompt, or while the user's previous prompt on this job is still pending."""
    require_write(user, job.team)
    if refusal := prompt_refusal(job):
        raise PromptRejected(refusal)
    text = prompt.strip()
    if not text:
        raise PromptRejected("Type a prompt to ask both models.")
    if len(text) > LLM_PROMPT_MAX_CHARS:
        raise PromptRejected(
            f"The prompt is {len(text)} characters; at most {LLM_PROMPT_MAX_CHARS} are answered."
        )
    JobPrompt.expire_stale(job.prompts.all())
    with transaction.atomic():
        if job.prompts.filter(user=user, status__in=JobPrompt.PENDING).exists():
            raise PromptRejected(ONE_AT_A_TIME, status=429)
        try:
            with transaction.atomic():
                row = JobPrompt.objects.create(
                    job=job, user=user, prompt=text, max_new_tokens=PROMPT_MAX_NEW_TOKENS
                )
        except IntegrityError:  # a second post that raced this one past the check
            raise PromptRejected(ONE_AT_A_TIME, status=429) from None
        transaction.on_commit(lambda: _enqueue(row))
    log.info("prompt %s asked on job %s", row.uuid, job.uuid, extra={"job_id": str(job.uuid)})
    return row


def _enqueue(row: JobPrompt) -> None:
    """Send the prompt's task on the queue CPU jobs use; a broker that cannot be reached
    fails the prompt with the reason instead of leaving it waiting."""
    try:
        send_job_prompt(row, queue=cpu_queue(), expires=PENDING_EXPIRY)
    except Exception as exc:
        log.exception("could not enqueue prompt %s", row.uuid)
        row.fail(f"Could not reach the job queue: {exc}. Try again later.")


@dataclass
class PromptRegion:
    """What the results page's "Ask both models" region shows."""

    job: Job
    prompts: list[JobPrompt]  # newest first, RECENT_PROMPTS of them
    total: int
    can_ask: bool  # the user may ask (a member) and the job takes prompts
    refusal: str | None  # why the job takes no prompts
    form: PromptForm = field(default_factory=PromptForm)
    max_new_tokens: int = PROMPT_MAX_NEW_TOKENS

    @property
    def pending(self) -> bool:
        """Some listed prompt awaits its answers: the list polls until none does."""
        return any(p.is_pending for p in self.prompts)


def recent_prompts(job: Job) -> QuerySet[JobPrompt]:
    return job.prompts.select_related("user")


def prompt_region(job: Job, user: User, *, form: PromptForm | None = None) -> PromptRegion:
    """The region for `user` (stale pending prompts are failed first, so the list settles)."""
    JobPrompt.expire_stale(job.prompts.all())
    prompts = recent_prompts(job)
    refusal = prompt_refusal(job)
    return PromptRegion(
        job=job,
        prompts=list(prompts[:RECENT_PROMPTS]),
        total=prompts.count(),
        can_ask=refusal is None and can_write(user, job.team),
        refusal=refusal,
        form=form or PromptForm(),
    )
