"""{{ job|job_title }}: a job named by what it did (jobs.titles)."""

from __future__ import annotations

from typing import Any

from django import template

from jobs.titles import job_title as _job_title

register = template.Library()


@register.filter
def job_title(job: Any) -> str:
    return _job_title(job)
