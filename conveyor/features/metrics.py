"""Job metrics published by every process to Redis, for ``/metrics`` (SPEC WEB-2).

Things only a worker (or a producer) sees — jobs run and failed by class and queue, how long
they ran, retry attempts, deduplicated enqueues, concurrency deferrals — are counted in memory
by middleware and added to one cluster-wide Redis hash in batches (one script call per
``flush_interval``), so the web process can expose them at scrape time. Everything Redis
already knows (queue sizes and latency, set sizes, processes) is read at scrape time instead.

>>> from conveyor.features import metrics
>>> metrics.install(app)                      # doctest: +SKIP
>>> metrics.read(app).counter("processed")    # doctest: +SKIP
{('HardWorker', 'default'): 12}

A worker flushes every ``flush_interval`` seconds; any process flushes once more when the
interpreter exits (``atexit``). A worker killed with SIGKILL loses at most one interval of
counts; the scrape-time gauges never lose anything.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.core.extensions import ExtensionKey
from conveyor.core.middleware import ClientMiddleware, EnqueueContext, JobContext, ServerMiddleware
from conveyor.errors import ConfigurationError
from conveyor.features.dedup import policy_of
from conveyor.redis.metrics import MetricsStore

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job

log = logging.getLogger("conveyor.metrics")

#: Upper bounds (seconds) of the job duration histogram's buckets.
BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    math.inf,
)
DEFAULT_FLUSH_INTERVAL = 5.0

#: Counter series -> the labels each one carries.
COUNTERS: dict[str, tuple[str, ...]] = {
    "processed": ("class", "queue"),
    "failed": ("class", "queue"),
    "retried": ("class", "queue"),
    "dedup_dropped": ("class",),
    "concurrency_deferred": ("class",),
}


def _field(series: str, *labels: str) -> str:
    return json.dumps([series, *labels], separators=(",", ":"))


def _bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


class Recorder:
    """In-memory counts of one process, flushed to Redis in one script call.

    Thread-safe: every worker thread records into it.
    """

    def __init__(self, app: App, flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> None:
        if flush_interval <= 0:
            raise ConfigurationError(f"metrics flush_interval must be > 0, got {flush_interval}")
        self.app = app
        self.flush_interval = flush_interval
        self._counts: dict[str, int] = defaultdict(int)
        self._sums: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()
        self._last_flush = app.clock.monotonic()

    def count(self, series: str, *labels: str, n: int = 1) -> None:
        """Add ``n`` to a counter series (see :data:`COUNTERS` for its labels)."""
        with self._lock:
            self._counts[_field(series, *labels)] += n

    def observe(self, job_class: str, queue: str, seconds: float) -> None:
        """Record one job duration in the histogram."""
        seconds = max(0.0, seconds)
        bound = next(b for b in BUCKETS if seconds <= b)
        with self._lock:
            self._counts[_field("duration_bucket", job_class, queue, _bucket_label(bound))] += 1
            self._counts[_field("duration_count", job_class, queue)] += 1
            self._sums[_field("duration_sum", job_class, queue)] += seconds

    def flush(self) -> int:
        """Add what was recorded since the last flush to Redis; returns fields changed.

        On a Redis error the counts are kept for the next flush.
        """
        with self._lock:
            counts, sums = dict(self._counts), dict(self._sums)
            self._counts.clear()
            self._sums.clear()
            self._last_flush = self.app.clock.monotonic()
        if not counts and not sums:
            return 0
        try:
            return MetricsStore(self.app.store).add(counts, sums)
        except Exception:
            with self._lock:
                for key, n in counts.items():
                    self._counts[key] += n
                for key, amount in sums.items():
                    self._sums[key] += amount
            raise

    def maybe_flush(self) -> None:
        """Flush if ``flush_interval`` has passed (producers that run no periodic tasks)."""
        if self.app.clock.monotonic() - self._last_flush >= self.flush_interval:
            try:
                self.flush()
            except Exception as exc:  # never fail an enqueue for a metric
                log.warning("metrics flush failed (%s); kept for the next one", exc)


class MetricsServerMiddleware(ServerMiddleware):
    """Counts executed, failed, retried and deferred jobs and times ``perform``.

    Installed first in the chain, so it sees what every other middleware did.
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def before_perform(self, ctx: JobContext) -> None:
        ctx.state["metrics_started"] = ctx.app.clock.monotonic()

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        name = str(ctx.job.get("class") or ctx.job_class.wire_name())
        if ctx.handed_off:
            self.recorder.count("concurrency_deferred", name)
            return
        queue = ctx.queue
        started = ctx.state.get("metrics_started", ctx.app.clock.monotonic())
        self.recorder.observe(name, queue, ctx.app.clock.monotonic() - started)
        self.recorder.count("processed", name, queue)
        if error is not None:
            self.recorder.count("failed", name, queue)
        if "retry_count" in ctx.job:  # Sidekiq sets it at the first failure
            self.recorder.count("retried", name, queue)
        self.recorder.maybe_flush()


class MetricsDeferralMiddleware(ServerMiddleware):
    """Last in the chain: counts the jobs an earlier middleware's ``prepare_batch`` handed off
    for a whole fetched batch (deferred by a concurrency limit) before any of them ran."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def prepare_batch(self, jobs: list[Any]) -> None:
        for unit in jobs:
            if getattr(unit, "handed_off", None) and isinstance(getattr(unit, "job", None), dict):
                self.recorder.count("concurrency_deferred", str(unit.job.get("class")))


class MetricsClientMiddleware(ClientMiddleware):
    """Counts enqueues dropped as duplicates (deduplication)."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def applies_to(self, job_class: type[Job] | None) -> bool:
        # Only deduplication drops a job as a duplicate.
        return job_class is not None and policy_of(job_class) is not None

    def after_enqueue(self, ctx: EnqueueContext) -> None:
        if ctx.dropped is not None and "duplicate_of" in ctx.info:
            self.recorder.count("dedup_dropped", str(ctx.job.get("class")))
            self.recorder.maybe_flush()


#: The app's :class:`Recorder` (set by :func:`install`).
METRICS: ExtensionKey[Recorder] = ExtensionKey("metrics")


def install(app: App, *, flush_interval: float = DEFAULT_FLUSH_INTERVAL) -> Recorder:
    """Record job metrics in ``app``'s processes and publish them to Redis.

    Install it after the other features: it puts one middleware first in each chain (it sees
    what every other one did) and one last in the server chain (it sees batch deferrals)::

        app = conveyor.App(settings)
        conveyor.features.metrics.install(app)
    """
    recorder = Recorder(app, flush_interval)
    app.extensions[METRICS] = recorder
    app.server_middleware.prepend(MetricsServerMiddleware(recorder))
    app.server_middleware.add(MetricsDeferralMiddleware(recorder))
    app.client_middleware.prepend(MetricsClientMiddleware(recorder))
    app.add_periodic("metrics-flush", flush_interval, recorder.flush)
    # The worker runs no periodic task while stopping: publish the last counts at exit.
    atexit.register(_flush_at_exit, weakref.ref(recorder))
    return recorder


def _flush_at_exit(ref: weakref.ref[Recorder]) -> None:
    recorder = ref()
    if recorder is not None:
        try:
            recorder.flush()
        except Exception as exc:
            log.warning("metrics not published at exit: %s", exc)


def flush(app: App) -> int:
    """Publish what ``app``'s recorder holds now (e.g. before a producer script exits)."""
    recorder = app.extensions.get(METRICS)
    return recorder.flush() if isinstance(recorder, Recorder) else 0


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts (upper bound label -> count), total count and sum."""

    buckets: dict[str, int]
    count: int
    sum: float


@dataclass(frozen=True)
class Snapshot:
    """The published metrics of the whole cluster, as the web process reads them."""

    #: series -> label values -> count
    counters: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict)
    #: (class, queue) -> histogram
    durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)

    def counter(self, series: str) -> dict[tuple[str, ...], int]:
        """One counter series, e.g. ``snapshot.counter("failed")[("Hard", "default")]``."""
        return self.counters.get(series, {})


def read(app: App) -> Snapshot:
    """Everything published so far by every process (one HGETALL).

    Example: ``metrics.read(app).counter("dedup_dropped")``.
    """
    counters: dict[str, dict[tuple[str, ...], int]] = {s: {} for s in COUNTERS}
    buckets: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    counts: dict[tuple[str, str], int] = {}
    sums: dict[tuple[str, str], float] = {}
    for series, labels, value in _decode(MetricsStore(app.store).read()):
        if series in COUNTERS and len(labels) == len(COUNTERS[series]):
            counters[series][labels] = int(float(value))
        elif series == "duration_bucket" and len(labels) == 3:
            buckets[(labels[0], labels[1])][labels[2]] = int(float(value))
        elif series == "duration_count" and len(labels) == 2:
            counts[(labels[0], labels[1])] = int(float(value))
        elif series == "duration_sum" and len(labels) == 2:
            sums[(labels[0], labels[1])] = float(value)
    durations = {
        key: Histogram(_cumulative(buckets.get(key, {})), count, sums.get(key, 0.0))
        for key, count in counts.items()
    }
    return Snapshot(counters, durations)


def reset(app: App) -> bool:
    """Forget every published metric. Example: ``metrics.reset(app)``."""
    return MetricsStore(app.store).reset()


def _decode(fields: dict[str, str]) -> Iterator[tuple[str, tuple[str, ...], str]]:
    for key, value in fields.items():
        try:
            parts = json.loads(key)
        except ValueError:
            continue
        if isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts):
            yield parts[0], tuple(parts[1:]), value


def _cumulative(per_bucket: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    total = 0
    for bound in BUCKETS:
        label = _bucket_label(bound)
        total += per_bucket.get(label, 0)
        out[label] = total
    return out
