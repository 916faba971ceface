"""Prometheus metrics, read from the database and the broker at scrape time.

Web replicas and workers are separate processes, usually on separate machines, so nothing
here counts in process memory: each scrape asks the database (a fixed five aggregate
queries, however many jobs there are) and the broker (one length per queue) for the current
figures, and every replica answers the same. The collector lives in its own registry, not
prometheus_client's global one, so the exposition holds only these families.

Label values come only from fixed lists (job states, the engine's step kinds and quantize
modes, configured queue names): no team, project, model or user name ever becomes a label.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import Coalesce
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from compress_engine.configs import QUANTIZE_MODES, STEP_KINDS
from jobs.models import Job, WorkerHeartbeat
from registry.models import Dataset, ModelVersion

log = logging.getLogger(__name__)

# Upper bounds (seconds) of the job duration histogram: jobs take from seconds (dynamic int8
# on a small model) to the 6 h time limit (distillation of a large one).
DURATION_BUCKETS: tuple[float, ...] = (
    10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800,
)  # fmt: skip
# Seconds to reach the broker before the queue depths are reported as unavailable; a scrape
# must not hang on a broker that is down.
BROKER_TIMEOUT_SECONDS = 2.0


def technique(steps: Any) -> str:
    """The label of a recipe's steps: step kinds in order joined by `+`, quantize with its mode,
    e.g. `prune+distill+quantize:static-int8`.

    Only names from the engine's fixed lists are used (anything else reads `unknown`), so the
    label has few values and never carries text a user typed.
    """
    if not isinstance(steps, list) or not steps:
        return "unknown"
    parts = []
    for step in steps:
        kind = next(iter(step)) if isinstance(step, dict) and len(step) == 1 else None
        if kind not in STEP_KINDS:
            parts.append("unknown")
        elif kind == "quantize":
            config = step[kind]
            # `mode` may be left out for dynamic-int8, the engine's default scheme.
            mode = config.get("mode", "dynamic-int8") if isinstance(config, dict) else None
            parts.append(f"quantize:{mode if mode in QUANTIZE_MODES else 'unknown'}")
        else:
            parts.append(kind)
    return "+".join(parts)


def _bucket_key(index: int) -> str:
    return f"le_{index}"


class ModelPressCollector(Collector):
    """Yields every ModelPress metric family from fresh database and broker reads."""

    def collect(self) -> Iterator[Metric]:
        yield self._jobs_by_state()
        yield self._job_durations()
        yield self._upload_bytes()
        yield self._workers_alive()
        yield from self._queue_depths()

    def _jobs_by_state(self) -> Metric:
        family = GaugeMetricFamily(
            "modelpress_jobs", "Jobs by state (every state, 0 included).", labels=["state"]
        )
        rows = Job.objects.order_by().values("status").annotate(n=Count("pk"))
        counts = {row["status"]: row["n"] for row in rows}
        for state in Job.Status.values:
            family.add_metric([state], counts.get(state, 0))
        return family

    def _job_durations(self) -> Metric:
        """Started-to-finished time of every finished job, by technique and final state.

        All finished jobs, not a recent window, so the buckets only grow (rate() works on them;
        deleting a project deletes its jobs and reads as a counter reset). One grouped query
        counts each bucket in SQL; it returns one row per distinct steps list and state, which
        the technique label then merges (steps differing only in settings share a label).
        """
        duration = ExpressionWrapper(
            F("finished_at") - F("started_at"), output_field=DurationField()
        )
        buckets = {
            _bucket_key(i): Count("pk", filter=Q(duration__lte=timedelta(seconds=le)))
            for i, le in enumerate(DURATION_BUCKETS)
        }
        rows = (
            Job.objects.filter(
                status__in=Job.TERMINAL, started_at__isnull=False, finished_at__isnull=False
            )
            .alias(duration=duration)
            .order_by()
            .values("recipe__steps", "status")
            .annotate(count=Count("pk"), total=Sum("duration"), **buckets)
        )
        merged: dict[tuple[str, str], list[float]] = defaultdict(
            lambda: [0.0] * (len(DURATION_BUCKETS) + 2)
        )
        for row in rows:
            sums = merged[(technique(row["recipe__steps"]), row["status"])]
            for i in range(len(DURATION_BUCKETS)):
                sums[i] += row[_bucket_key(i)]
            sums[-2] += row["count"]
            sums[-1] += (row["total"] or timedelta(0)).total_seconds()
        family = HistogramMetricFamily(
            "modelpress_job_duration_seconds",
            "Started-to-finished time of finished jobs, by technique (the recipe's step kinds "
            "in order, quantize with its mode) and final state.",
            labels=["technique", "state"],
        )
        for (name, state), sums in sorted(merged.items()):
            le = [(floatToGoString(b), sums[i]) for i, b in enumerate(DURATION_BUCKETS)]
            family.add_metric([name, state], buckets=[*le, ("+Inf", sums[-2])], sum_value=sums[-1])
        return family

    def _upload_bytes(self) -> Metric:
        # A gauge despite `_total`: bytes stored now, so it falls when files are deleted.
        family = GaugeMetricFamily(
            "modelpress_upload_bytes_total",
            "Bytes of uploaded files kept in storage: model versions (the ONNX model plus a "
            "converted upload's source) and datasets.",
            labels=["kind"],
        )
        models = ModelVersion.objects.aggregate(
            onnx=Coalesce(Sum("size_bytes"), 0), source=Coalesce(Sum("source_size_bytes"), 0)
        )
        datasets = Dataset.objects.aggregate(size=Coalesce(Sum("size_bytes"), 0))
        family.add_metric(["model"], models["onnx"] + models["source"])
        family.add_metric(["dataset"], datasets["size"])
        return family

    def _workers_alive(self) -> Metric:
        return GaugeMetricFamily(
            "modelpress_workers_alive",
            "Workers whose heartbeat is younger than MODELPRESS_WORKER_STALE_SECONDS.",
            value=WorkerHeartbeat.alive().count(),
        )

    def _queue_depths(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "modelpress_broker_up", "1 if the broker answered this scrape's queue lengths."
        )
        try:
            depths = queue_depths(queue_names())
        except Exception as exc:  # the database figures are still worth reporting
            log.warning("metrics: the broker did not answer: %s: %s", type(exc).__name__, exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        family = GaugeMetricFamily(
            "modelpress_queue_depth",
            "Messages waiting in a Celery queue (not yet taken by a worker).",
            labels=["queue"],
        )
        for name, depth in depths.items():
            family.add_metric([name], depth)
        yield family


def queue_names() -> list[str]:
    """The queues work is sent to: the default one and, where configured, cpu, gpu and the
    conversions' queue."""
    names = [
        settings.CELERY_TASK_DEFAULT_QUEUE,
        getattr(settings, "MODELPRESS_CPU_QUEUE", None),
        getattr(settings, "MODELPRESS_GPU_QUEUE", None),
        getattr(settings, "MODELPRESS_CONVERT_QUEUE", None),
    ]
    return list(dict.fromkeys(name for name in names if name))


def queue_depths(names: Iterable[str]) -> dict[str, int]:
    """Waiting messages per queue, as the broker's transport counts them: on Redis the
    lengths of the queue's lists (one per priority step), on the filesystem transport the
    queue's message files. A queue the broker does not know has no messages."""
    from kombu.exceptions import ChannelError

    from config.celery import app

    # Redis socket timeouts (other transports ignore these options).
    timeouts = {
        "socket_timeout": BROKER_TIMEOUT_SECONDS,
        "socket_connect_timeout": BROKER_TIMEOUT_SECONDS,
    }
    depths: dict[str, int] = {}
    with app.connection_for_read(transport_options=timeouts) as conn:
        conn.ensure_connection(max_retries=1, timeout=BROKER_TIMEOUT_SECONDS)
        channel = conn.channel()
        try:
            for name in names:
                try:
                    depths[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    # Not found: Redis drops the list of an empty queue. (On AMQP the failed
                    # declare also closed the channel, hence a fresh one for the next queue.)
                    depths[name] = 0
                    channel.close()
                    channel = conn.channel()
        finally:
            channel.close()
    return depths


def build_registry() -> CollectorRegistry:
    """A registry holding only the ModelPress collector (not prometheus_client's global one,
    whose process and platform collectors describe one web process, not the platform)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelPressCollector())
    return registry


REGISTRY = build_registry()
