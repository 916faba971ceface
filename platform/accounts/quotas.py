"""Per-team quotas: stored bytes and jobs queued or running at once.

A team's own field wins; an empty field means the site-wide setting. Site admins set the
fields in Django admin. Callers (uploads, job starts, the worker writing artifacts) call the
check before the work and show `QuotaExceeded`'s message to the user.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Sum
from django.template.defaultfilters import filesizeformat

from accounts.models import Team
from jobs.models import Artifact, Job
from registry.models import Dataset, ModelVersion
from web.rejections import Rejected


class QuotaExceeded(Rejected):
    """The team is at a limit; the message says where it stands and what to do."""

    status = 413


def human_size(n: int) -> str:
    # filesizeformat keeps number and unit together with a no-break space; messages are
    # also read in logs and e-mails, where a plain space is clearer.
    return str(filesizeformat(n)).replace("\xa0", " ")


def storage_limit(team: Team) -> int:
    if team.storage_quota_bytes is not None:
        return team.storage_quota_bytes
    return settings.MODELPRESS_TEAM_STORAGE_QUOTA_BYTES


def job_limit(team: Team) -> int:
    if team.max_concurrent_jobs is not None:
        return team.max_concurrent_jobs
    return settings.MODELPRESS_TEAM_MAX_CONCURRENT_JOBS


def storage_used(team: Team) -> int:
    """Bytes the team keeps in storage: model versions (the ONNX model and, for converted
    uploads, the kept source file), datasets and job artifacts."""
    total = 0
    for queryset, fields in (
        (ModelVersion.objects.filter(project__team=team), ("size_bytes", "source_size_bytes")),
        (Dataset.objects.filter(project__team=team), ("size_bytes",)),
        (Artifact.objects.filter(job__team=team), ("size_bytes",)),
    ):
        sums = queryset.aggregate(**{f: Sum(f) for f in fields})
        total += sum(v or 0 for v in sums.values())
    return total


def active_jobs(team: Team) -> int:
    return Job.objects.filter(team=team, status__in=[Job.Status.QUEUED, Job.Status.RUNNING]).count()


def check_storage(team: Team, incoming_bytes: int) -> None:
    """Raise QuotaExceeded if storing `incoming_bytes` more would take the team past its quota.

    A soft check: two uploads racing each other can both pass and overshoot by one upload,
    which is preferable to serialising every upload of a team on a lock.
    """
    used = storage_used(team)
    limit = storage_limit(team)
    if used + incoming_bytes <= limit:
        return
    free = max(limit - used, 0)
    raise QuotaExceeded(
        f"Team “{team.name}” uses {human_size(used)} of its {human_size(limit)} storage quota; "
        f"this needs {human_size(incoming_bytes)} but only {human_size(free)} is free. "
        "Delete model versions, datasets or job results the team no longer needs, "
        "or ask your site administrator for a larger quota."
    )


def check_job_start(team: Team) -> None:
    """Raise QuotaExceeded if the team already has its maximum of jobs queued or running."""
    active = active_jobs(team)
    limit = job_limit(team)
    if active < limit:
        return
    raise QuotaExceeded(
        f"Team “{team.name}” already has {active} of its {limit} concurrent jobs queued or "
        "running. Wait for one to finish or cancel one, then start this job again; "
        "your site administrator can raise the limit."
    )


@dataclass(frozen=True)
class Usage:
    """What the team page shows: usage against each limit."""

    storage_used: int
    storage_limit: int
    active_jobs: int
    job_limit: int

    @property
    def storage_percent(self) -> int:
        if self.storage_limit <= 0:
            return 100
        return min(round(100 * self.storage_used / self.storage_limit), 100)


def usage(team: Team) -> Usage:
    return Usage(storage_used(team), storage_limit(team), active_jobs(team), job_limit(team))
