"""The project dashboard: the jobs table (filter, sort, pages) and the trade-off scatter with
its Pareto front."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.core.paginator import Page, Paginator
from django.db.models import BooleanField, Case, Count, F, FloatField, Max, QuerySet, Value, When
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.urls import get_script_prefix, reverse

from jobs.models import Job
from jobs.titles import compose, parts_title, with_title_parts
from registry.models import Project

log = logging.getLogger(__name__)
_MISSING = object()

PAGE_SIZE = 25
# Newest succeeded jobs drawn in the scatter; older ones stay in the table.
SCATTER_LIMIT = 500
SCATTER_CACHE_S = 600

# Sort keys (GET ?sort=, "-" for descending) -> the annotation or field sorted on.
SORTS: dict[str, str] = {
    "created": "created_at",
    "finished": "finished_at",
    "size_ratio": "size_ratio",
    "accuracy_drop": "accuracy_drop",
    "latency_ratio": "latency_ratio",
}
DEFAULT_SORT = "-created"
STATUSES = [s.value for s in Job.Status]


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """For each point, whether no other point dominates it, every objective minimised.

    A point dominates another when it is no worse in every objective and better in at least
    one; identical points do not dominate each other, so both stay on the front.
    """

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(
            x < y for x, y in zip(a, b, strict=True)
        )

    # A point's dominators all sort before it, and whatever dominates a dominator dominates
    # the point too: so each point, in sorted order, need only be checked against the front
    # found so far, not against every other point (hundreds of jobs per dashboard view).
    # Repeated points (reruns of one recipe) are decided once.
    decided: dict[tuple[float, ...], bool] = {}
    front: list[tuple[float, ...]] = []
    for point in sorted({tuple(p) for p in points}):
        decided[point] = not any(dominates(f, point) for f in front)
        if decided[point]:
            front.append(point)
    return [decided[tuple(p)] for p in points]


def _with_ratios(jobs: QuerySet[Job]) -> QuerySet[Job]:
    # The report stores its ratios (compress_engine Report computed fields) for sorting here;
    # they are read in SQL, so the report itself never leaves the database.
    return jobs.annotate(
        size_ratio=Cast(KT("report__size_ratio"), FloatField()),
        latency_ratio=Cast(KT("report__latency_ratio"), FloatField()),
        accuracy_drop=Cast(KT("report__accuracy__drop_points"), FloatField()),
        cosine=Cast(KT("report__fidelity__summary__cosine_similarity"), FloatField()),
        # A language model's quality: its perplexity change, percent (lower is better). Its
        # latency_ratio is per generated token (1 / the decode speed ratio).
        ppl_delta=Cast(KT("report__llm__ppl_delta_pct"), FloatField()),
        # Below the recipe's quality floor (reports older than the floor carry no verdict).
        not_recommended=Case(
            When(report__recommended=False, then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        ),
    )


# What a table row shows. The wide JSON columns (report, recipe, training, timeline) and the
# model version's graph facts are most of a row's bytes and decoding time, and none is shown:
# a row's title (jobs.titles) reads only the recipe's steps and exports, in SQL.
# `project` stays: the related manager (project.jobs) sets it on every row it loads, and a
# deferred one would cost a query per row.
TABLE_FIELDS = (
    "uuid",
    "project",
    "status",
    "created_at",
    "finished_at",
    "model_version__name",
    "model_version__version",
    "dataset__name",
)


@dataclass(frozen=True)
class Link:
    href: str  # the project page with these parameters: a real link, and the pushed URL
    fragment: str  # the same table alone, for htmx


@dataclass(frozen=True)
class SortLink:
    key: str
    label: str
    link: Link
    active: str  # "", "asc" or "desc": how the table is sorted by this column now


@dataclass(frozen=True)
class JobsTable:
    page: Page
    status: str
    sort: str
    sort_links: dict[str, SortLink]
    previous: Link | None
    next: Link | None
    base_href: str  # the project page
    fragment_url: str  # the htmx endpoint serving this table alone

    @property
    def status_choices(self) -> list[tuple[str, str]]:
        return list(Job.Status.choices)

    def href(self, **params: Any) -> str:
        return _href(self.base_href, {"status": self.status, "sort": self.sort, **params})


def _href(base: str, params: Mapping[str, Any]) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    # Defaults stay out of the address, so the plain project URL is the first page.
    if clean.get("sort") == DEFAULT_SORT:
        del clean["sort"]
    if str(clean.get("page", "")) == "1":
        del clean["page"]
    return f"{base}?{urlencode(clean)}" if clean else base


def jobs_table(project: Project, query: Mapping[str, str]) -> JobsTable:
    status = query.get("status", "")
    status = status if status in STATUSES else ""
    sort = query.get("sort", DEFAULT_SORT)
    if sort.lstrip("-") not in SORTS:
        sort = DEFAULT_SORT
    jobs = _with_ratios(project.jobs.all())
    if status:
        jobs = jobs.filter(status=status)
    column = F(SORTS[sort.lstrip("-")])
    # Jobs without the figure (not finished, no labels) go last either way; the pk makes the
    # order total, so the page chosen and the rows shown come in the same order.
    order = column.desc(nulls_last=True) if sort.startswith("-") else column.asc(nulls_last=True)
    ordering = (order, F("created_at").desc(), F("pk").desc())
    page = Paginator(jobs.order_by(*ordering).values("pk"), PAGE_SIZE).get_page(query.get("page"))
    # One query: the page's jobs are picked in a subquery that reads only the sorted column
    # (no report at all when sorting by a date), and only the page's rows read their ratios.
    page.object_list = (
        with_title_parts(_with_ratios(project.jobs.filter(pk__in=page.object_list)))
        .select_related("model_version", "dataset")
        .only(*TABLE_FIELDS)
        .order_by(*ordering)
    )
    base = reverse("registry-project", kwargs={"project_uuid": project.uuid})
    fragment = reverse("jobs-project-table", kwargs={"project_uuid": project.uuid})

    def link(**params: Any) -> Link:
        return Link(_href(base, params), _href(fragment, params))

    labels = {
        "created": "Created",
        "finished": "Finished",
        "size_ratio": "Size",
        "accuracy_drop": "Accuracy drop",
        "latency_ratio": "Latency",
    }
    links = {}
    for key, label in labels.items():
        active = "desc" if sort == f"-{key}" else "asc" if sort == key else ""
        # Clicking the active column flips it; another column starts ascending (dates
        # newest first).
        first = f"-{key}" if key in ("created", "finished") else key
        target = (key if active == "desc" else f"-{key}") if active else first
        links[key] = SortLink(key, label, link(status=status, sort=target), active)
    return JobsTable(
        page=page,
        status=status,
        sort=sort,
        sort_links=links,
        previous=link(status=status, sort=sort, page=page.previous_page_number())
        if page.has_previous()
        else None,
        next=link(status=status, sort=sort, page=page.next_page_number())
        if page.has_next()
        else None,
        base_href=base,
        fragment_url=fragment,
    )


def scatter(project: Project) -> dict[str, Any] | None:
    """Charts of the project's succeeded jobs, one per model version (jobs._chart): accuracy
    (or fidelity, said so, when a job had no labels) against latency and size, with the
    Pareto front marked; None with no such job.

    Every dashboard view shows it, and building it reads every plotted report, so it is
    cached per set of succeeded jobs. That set only grows, by a job succeeding (reports never
    change after), so its size and newest finish name it; the timeout bounds what anything
    else (an admin's edit) could leave stale.
    """
    succeeded = project.jobs.filter(status=Job.Status.SUCCEEDED).aggregate(
        count=Count("pk"), newest=Max("finished_at")
    )
    if not succeeded["count"]:
        return None
    newest = succeeded["newest"].isoformat() if succeeded["newest"] else ""
    # The URLs in the points depend on the prefix the site is served under.
    key = f"jobs:scatter:{project.uuid}:{succeeded['count']}:{newest}:{get_script_prefix()}"
    # A cache that is down (Redis) costs speed only: the scatter is built uncached then.
    try:
        cached = cache.get(key, _MISSING)
    except Exception:
        log.warning("dashboard cache unreachable; building the scatter uncached", exc_info=True)
        return _build_scatter(project)
    if cached is not _MISSING:
        return cached
    built = _build_scatter(project)
    try:
        cache.set(key, built, SCATTER_CACHE_S)
    except Exception:
        log.warning("dashboard cache unreachable; scatter not cached", exc_info=True)
    return built


def _build_scatter(project: Project) -> dict[str, Any] | None:
    # Read from the report JSON in the query (as the table sorts): no report is parsed here,
    # and plain rows rather than model instances, since a point needs only these values.
    jobs = list(
        with_title_parts(_with_ratios(project.jobs))
        .filter(status=Job.Status.SUCCEEDED, size_ratio__isnull=False, latency_ratio__isnull=False)
        .annotate(top1=Cast(KT("report__accuracy__result_top1"), FloatField()))
        .order_by("-finished_at")
        .values(
            "uuid",
            "model_version__uuid",
            "model_version__name",
            "model_version__version",
            "dataset__name",
            "title_steps",
            "title_export",
            "title_tflite",
            "size_ratio",
            "latency_ratio",
            "cosine",
            "top1",
            "ppl_delta",
            "not_recommended",
        )[:SCATTER_LIMIT]
    )
    if not jobs:
        return None
    # One chart per model version: ratios against different originals do not compare.
    by_version: dict[Any, list[dict[str, Any]]] = {}
    for job in jobs:
        by_version.setdefault(job["model_version__uuid"], []).append(job)
    charts = [_chart(i, rows) for i, rows in enumerate(by_version.values())]
    charts = [c for c in charts if c["points"]]
    return {"charts": charts} if charts else None


def _chart(index: int, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """One model version's jobs: accuracy when every one of them was scored on labels, else
    fidelity (cosine similarity to the original), and the chart says which and why; for a
    language model, the perplexity change (lower is better) against latency per token.

    The front is the recommended points: jobs at or above their quality floor that no other
    such job beats on all three. A job below its floor (Report.recommended false) is no
    trade-off to pick however small or fast, so it is never on the front nor hides a job."""
    if all(job["ppl_delta"] is not None for job in jobs):
        return _llm_chart(index, jobs)
    without_labels = sum(1 for job in jobs if job["top1"] is None)
    use_accuracy = without_labels == 0
    rows = [(job, 100 * job["top1"] if use_accuracy else job["cosine"]) for job in jobs]
    rows = [(job, m) for job, m in rows if m is not None]
    eligible = [(job, m) for job, m in rows if not job["not_recommended"]]
    undominated = pareto_front(
        [(job["latency_ratio"], job["size_ratio"], -m) for job, m in eligible]
    )
    on_front = {id(job) for (job, _), won in zip(eligible, undominated, strict=True) if won}
    points = [_point(job, m, id(job) in on_front) for job, m in rows]
    first = jobs[0]
    if use_accuracy:
        label, note = "Accuracy: top-1 on labelled data (%)", ""
    else:
        label = "Fidelity: cosine similarity to the original (not accuracy)"
        note = (
            f"{without_labels} of {len(jobs)} job{'s' if len(jobs) != 1 else ''} ran without "
            "labelled data, so this chart compares fidelity to the original, not accuracy."
        )
    return {
        "id": f"pareto-data-{index}",
        "version": f"{first['model_version__name']} v{first['model_version__version']}",
        "metric": "accuracy" if use_accuracy else "cosine",
        "metric_label": label,
        "note": note,
        "points": points,
        "front": [p for p in points if p["front"]],
    }


def _llm_chart(index: int, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """A language model's jobs: the perplexity change (minimised, like latency and size)."""
    rows = [(job, job["ppl_delta"]) for job in jobs]
    eligible = [(job, m) for job, m in rows if not job["not_recommended"]]
    undominated = pareto_front(
        [(job["latency_ratio"], job["size_ratio"], m) for job, m in eligible]
    )
    on_front = {id(job) for (job, _), won in zip(eligible, undominated, strict=True) if won}
    points = [_point(job, m, id(job) in on_front) for job, m in rows]
    first = jobs[0]
    return {
        "id": f"pareto-data-{index}",
        "version": f"{first['model_version__name']} v{first['model_version__version']}",
        "metric": "perplexity",
        "metric_label": "Perplexity change vs the original (%, lower is better)",
        "note": (
            "A language model: latency is per generated token (greedy decode, batch 1), so "
            "left is faster decoding."
        ),
        "points": points,
        "front": [p for p in points if p["front"]],
    }


def _point(job: dict[str, Any], metric: float, front: bool) -> dict[str, Any]:
    return {
        "job": str(job["uuid"]),
        "label": _row_title(job),
        "url": reverse("jobs-detail", kwargs={"job_uuid": job["uuid"]}),
        "latency_ratio": round(job["latency_ratio"], 4),
        "size_ratio": round(job["size_ratio"], 4),
        "metric": round(metric, 6),
        "front": front,
        "recommended": not job["not_recommended"],
    }


def _row_title(job: dict[str, Any]) -> str:
    """jobs.titles.job_title for a values() row."""
    recipe_part = parts_title(job["title_steps"], job["title_export"], job["title_tflite"])
    return compose(
        job["model_version__name"], job["model_version__version"], recipe_part, job["dataset__name"]
    )


def project_dashboard(project: Project, query: Mapping[str, str]) -> dict[str, Any]:
    """Context for the jobs section of templates/registry/project.html."""
    return {"jobs_table": jobs_table(project, query), "scatter": scatter(project)}
