"""``/metrics`` in Prometheus text format (SPEC WEB-2), read at scrape time.

Two sources, one scrape: gauges and totals Redis already holds (queue sizes and latency, set
sizes, processes, ``stat:*``), read through the data API; and what workers counted themselves
(jobs by class and queue, durations, retry attempts, dedup drops, concurrency deferrals),
published to Redis by :mod:`conveyor.features.metrics` and read with
:func:`conveyor.features.metrics.read`.
Extensions add their own collectors. Each dashboard has its own registry (no globals).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from conveyor.features import metrics
from conveyor.features.cron import Cron
from conveyor.web.extension import WebContext, context_of

#: Worker-side counter series -> (metric name, help).
COUNTERS = {
    "processed": ("conveyor_jobs_processed", "Jobs executed, by class and queue."),
    "failed": ("conveyor_jobs_failed", "Jobs whose perform (or middleware) raised."),
    "retried": ("conveyor_job_retries", "Retry attempts executed (jobs with a retry_count)."),
    "dedup_dropped": ("conveyor_dedup_dropped", "Enqueues dropped as duplicates."),
    "concurrency_deferred": (
        "conveyor_concurrency_deferred",
        "Jobs deferred because their class was at its concurrency limit.",
    ),
}


class ConveyorCollector:
    """Reads Redis at every scrape; nothing is cached between scrapes."""

    def __init__(self, web: WebContext) -> None:
        self.web = web

    def collect(self) -> Iterator[Metric]:
        yield from self._stats()
        yield from self._published()

    def _stats(self) -> Iterator[Metric]:
        api = self.web.api
        stats = api.stats()
        yield CounterMetricFamily(
            "conveyor_stat_processed",
            "Jobs processed by every engine on this Redis (Sidekiq's stat:processed).",
            value=stats.processed,
        )
        yield CounterMetricFamily(
            "conveyor_stat_failed",
            "Jobs failed on every engine on this Redis (Sidekiq's stat:failed).",
            value=stats.failed,
        )
        size = GaugeMetricFamily(
            "conveyor_queue_size", "Jobs waiting in a queue.", labels=["queue"]
        )
        latency = GaugeMetricFamily(
            "conveyor_queue_latency_seconds",
            "Seconds the job that runs next has waited.",
            labels=["queue"],
        )
        for queue in api.queues():
            size.add_metric([queue.name], stats.queues.get(queue.name, 0))
            latency.add_metric([queue.name], queue.latency())
        yield size
        yield latency
        sets = GaugeMetricFamily("conveyor_set_size", "Entries in a sorted set.", labels=["set"])
        for name, value in (
            ("scheduled", stats.scheduled_size),
            ("retry", stats.retry_size),
            ("dead", stats.dead_size),
            ("interrupted", stats.interrupted_size),
        ):
            sets.add_metric([name], value)
        yield sets
        yield GaugeMetricFamily(
            "conveyor_dead_jobs", "Jobs in the dead set.", value=stats.dead_size
        )
        processes = api.processes.list()
        procs = GaugeMetricFamily("conveyor_processes", "Live worker processes.", labels=["state"])
        quiet = sum(1 for p in processes if p.quiet)
        procs.add_metric(["running"], len(processes) - quiet)
        procs.add_metric(["quiet"], quiet)
        yield procs
        yield GaugeMetricFamily(
            "conveyor_unhealthy_processes",
            "Live processes with a loop failing or making no progress (see conveyor processes).",
            value=sum(1 for p in processes if not p.healthy),
        )
        errors = GaugeMetricFamily(
            "conveyor_loop_errors",
            "Errors the loops of live processes met and survived since they started, by loop.",
            labels=["loop"],
        )
        by_loop: dict[str, int] = {}
        for p in processes:
            for loop, count in p.loop_errors().items():
                by_loop[loop] = by_loop.get(loop, 0) + count
        for loop, count in sorted(by_loop.items()):
            errors.add_metric([loop], count)
        yield errors
        trimmed = CounterMetricFamily(
            "conveyor_trimmed",
            "Entries the dead and interrupted sets dropped to stay within their limits (each "
            "logged with its jid).",
            labels=["set"],
        )
        for name, count in api.trimmed().items():
            trimmed.add_metric([name], count)
        yield trimmed

        yield GaugeMetricFamily(
            "conveyor_busy_threads",
            "Threads running a job, over all processes.",
            value=stats.workers_size,
        )
        yield GaugeMetricFamily(
            "conveyor_concurrency_threads",
            "Threads of every live process.",
            value=sum(p.concurrency for p in processes),
        )
        entries = Cron(api.app, api.store_name).entries()
        cron = GaugeMetricFamily("conveyor_cron_entries", "Cron entries.", labels=["state"])
        cron.add_metric(["enabled"], sum(1 for e in entries if e.enabled))
        cron.add_metric(["disabled"], sum(1 for e in entries if not e.enabled))
        yield cron

    def _published(self) -> Iterator[Metric]:
        snapshot = metrics.read(self.web.app)
        for series, (name, doc) in COUNTERS.items():
            labels = list(metrics.COUNTERS[series])
            family = CounterMetricFamily(name, doc, labels=labels)
            for values, count in sorted(snapshot.counter(series).items()):
                family.add_metric(list(values), count)
            yield family
        durations = HistogramMetricFamily(
            "conveyor_job_duration_seconds",
            "Seconds jobs ran (perform and server middleware), by class and queue.",
            labels=["class", "queue"],
        )
        for (job_class, queue), histogram in sorted(snapshot.durations.items()):
            durations.add_metric([job_class, queue], list(histogram.buckets.items()), histogram.sum)
        yield durations


def registry(web: WebContext) -> CollectorRegistry:
    """A registry with the Conveyor collector and every extension's."""
    found = CollectorRegistry(auto_describe=False)
    found.register(ConveyorCollector(web))
    for extension in web.extensions:
        for make in extension.collectors:
            found.register(make(web))
    return found


async def endpoint(request: Request) -> Response:
    """``GET /metrics``."""
    web = context_of(request)
    reg = getattr(request.app.state, "conveyor_metrics", None)
    if not isinstance(reg, CollectorRegistry):
        reg = request.app.state.conveyor_metrics = registry(web)
    body = await run_in_threadpool(generate_latest, reg)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
