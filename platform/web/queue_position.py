"""Where a queued job or a pending conversion stands in its queue, and what runs ahead of it.

Counted from the database, not the broker: the queued and running rows of the same queue,
oldest first. The broker cannot say which message is whose (and the filesystem broker not
even how many there are), while the rows are the work itself. Rows of other teams ahead are
counted, never named.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db.models import Q, QuerySet

if TYPE_CHECKING:
    from jobs.models import Job
    from registry.models import ModelVersion

# Rows ahead named one by one; the rest are counted.
NAMED = 5


@dataclass(frozen=True)
class QueuePosition:
    """1 = next to start. `ahead` names the viewer's team's rows ahead (oldest first, at most
    NAMED); `unnamed` counts the others (past NAMED, or another team's)."""

    queue: str
    position: int
    ahead: list[str] = field(default_factory=list)
    unnamed: int = 0
    noun: str = "job"

    @property
    def text(self) -> str:
        where = f"{ordinal(self.position)} in the {self.queue} queue"
        if self.position == 1:
            return f"{where}, next to start"
        parts = list(self.ahead)
        if self.unnamed:
            other = "other" if self.ahead else ""
            plural = "" if self.unnamed == 1 else "s"
            parts.append(" ".join(filter(None, [str(self.unnamed), other, f"{self.noun}{plural}"])))
        return f"{where}, behind: {', '.join(parts)}"


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _earlier(row: Job | ModelVersion) -> Q:
    return Q(created_at__lt=row.created_at) | Q(created_at=row.created_at, pk__lt=row.pk)


def _position(
    queue: str, ahead: QuerySet, team_id: int, team_field: str, label, noun: str
) -> QueuePosition:
    total = ahead.count()
    mine = list(ahead.filter(**{team_field: team_id}).order_by("created_at", "pk")[:NAMED])
    return QueuePosition(
        queue=queue,
        position=total + 1,
        ahead=[label(row) for row in mine],
        unnamed=total - len(mine),
        noun=noun,
    )


def job_position(job: Job) -> QueuePosition | None:
    """A queued job's place: the running jobs of its queue and the queued ones created
    before it are ahead. None once it is no longer queued."""
    from jobs.models import Job
    from jobs.titles import SEPARATOR, job_title, with_title_parts

    if job.status != Job.Status.QUEUED:
        return None
    ahead = with_title_parts(
        Job.objects.filter(queue=job.queue)
        .filter(Q(status=Job.Status.RUNNING) | (Q(status=Job.Status.QUEUED) & _earlier(job)))
        .select_related("model_version", "dataset")
    )

    def label(row: Job) -> str:
        running = " (running)" if row.status == Job.Status.RUNNING else ""
        return f"{job_title(row)}{SEPARATOR}job {str(row.uuid)[:8]}{running}"

    return _position(job.queue, ahead, job.team_id, "team_id", label, "job")


def conversion_position(version: ModelVersion) -> QueuePosition | None:
    """A version's place in the convert queue while it waits there: the conversions uploaded
    before it. None once a worker has taken it, and once it has converted or failed."""
    from django.conf import settings

    from registry.models import ModelVersion

    if not version.is_converting or version.conversion_started:
        return None
    ahead = ModelVersion.objects.filter(status=ModelVersion.Status.CONVERTING).filter(
        _earlier(version)
    )
    return _position(
        settings.MODELPRESS_CONVERT_QUEUE,
        ahead,
        version.project.team_id,
        "project__team_id",
        lambda row: f"{row} ({'converting' if row.conversion_started else 'conversion'})",
        "conversion",
    )
