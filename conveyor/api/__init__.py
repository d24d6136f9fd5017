"""The data API: read and change queues, the scheduled/retry/dead/interrupted sets, processes and
stats, modelled on Sidekiq's ``api.rb``. The CLI and the web dashboard use only this module; all
Redis access lives in :mod:`conveyor.redis.admin`.

>>> api = Api.from_settings(Settings(redis_url="redis://localhost:6379/0"))   # doctest: +SKIP
>>> api.stats().enqueued                                                       # doctest: +SKIP
12
>>> api.retries.retry_all()                                                    # doctest: +SKIP
3
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from conveyor.api._operations import (
    FailedItemRecord,
    FinishedOperationRecord,
    OperationRecord,
    OperationsApi,
)
from conveyor.api._processes import ProcessInfo, ProcessSet, Work, WorkSet
from conveyor.api._records import JobRecord
from conveyor.api._sets import (
    PAGE,
    DeadSet,
    InterruptedSet,
    JobSet,
    KillableSet,
    Progress,
    Queue,
    RetrySet,
    ScheduledSet,
)
from conveyor.core.job import EnqueueResult
from conveyor.core.payload import Payload
from conveyor.errors import ConfigurationError
from conveyor.redis.admin import Admin, RedisError, stop_embedded_server
from conveyor.redis.connection import resolve_url
from conveyor.redis.store import Store
from conveyor.settings import Settings

if TYPE_CHECKING:
    from conveyor.core.app import App

log = logging.getLogger("conveyor.api")


@dataclass(frozen=True)
class Stats:
    """A snapshot of the totals shown on a dashboard's front page.

    >>> api.stats().processed                                  # doctest: +SKIP
    1024
    """

    processed: int
    failed: int
    scheduled_size: int
    retry_size: int
    dead_size: int
    interrupted_size: int
    processes_size: int
    #: Busy threads over all processes.
    workers_size: int
    #: Jobs waiting over all queues.
    enqueued: int
    #: Seconds the oldest job of the ``default`` queue has waited.
    default_queue_latency: float
    #: Queue name -> size, largest first.
    queues: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreStats:
    """One store's part of an :class:`Overview`: its stats, or why they could not be read."""

    name: str
    #: The store's URL without credentials.
    url: str
    stats: Stats | None = None
    error: str | None = None


@dataclass(frozen=True)
class Overview:
    """Totals summed across every store (``total``), and each store's own (``stores``).

    >>> api.overview().total.enqueued                          # doctest: +SKIP
    2000
    """

    total: Stats
    stores: list[StoreStats]


def sum_stats(parts: Sequence[Stats]) -> Stats:
    """Stats added up: counters and sizes summed, queues of the same name summed, the
    default queue's latency the largest.

    Example: ``sum_stats([a.stats(), b.stats()]).processed``.
    """
    queues: dict[str, int] = {}
    for part in parts:
        for name, size in part.queues.items():
            queues[name] = queues.get(name, 0) + size
    summed = {
        f.name: sum(getattr(p, f.name) for p in parts)
        for f in dataclasses.fields(Stats)
        if f.name not in ("queues", "default_queue_latency")
    }
    return Stats(
        **summed,
        default_queue_latency=max((p.default_queue_latency for p in parts), default=0.0),
        queues=dict(sorted(queues.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


@dataclass(frozen=True)
class History:
    """Daily processed/failed counts, newest day first (``YYYY-MM-DD`` -> count).

    >>> api.history(days=2).processed                          # doctest: +SKIP
    {'2024-05-02': 17, '2024-05-01': 40}
    """

    processed: dict[str, int]
    failed: dict[str, int]


class Api:
    """Entry point of the data API for one app (its Redis, key prefix, settings and clock).

    >>> api = Api(app)                                         # doctest: +SKIP
    >>> api.queue("default").size()                            # doctest: +SKIP
    0
    """

    def __init__(self, app: App, *, owns_app: bool = False, store: str | None = None) -> None:
        self.app = app
        self._owns_app = owns_app
        self._store_name = None if store is None else app.stores.check(store)
        self._views: dict[str, Api] = {}
        self._admin: Admin | None = None
        self._operations: OperationsApi | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Api:
        """An API over a fresh app (no jobs declared) for ``settings``; close it when done.

        Example: ``with Api.from_settings(Settings.load()) as api: print(api.stats())``.
        """
        from conveyor.core.app import App  # the app module imports the engine; keep import cheap

        return cls(App(settings), owns_app=True)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the Redis connections if this API created the app."""
        if self._owns_app:
            self.app.close()
        self._admin = None
        self._operations = None

    @property
    def settings(self) -> Settings:
        """The app's settings (caps of the dead set, key prefix...)."""
        return self.app.settings

    @property
    def store_name(self) -> str:
        """The store this API reads and changes (``Settings.store`` unless given)."""
        return self._store_name or self.app.settings.store

    @property
    def store(self) -> Store:
        """The Redis operations of this API's store (its client and key prefix)."""
        return self.app.stores.get(self.store_name)

    @property
    def admin(self) -> Admin:
        """The Redis operations behind this API (created on first use)."""
        if self._admin is None:
            self._admin = Admin(self.store)
        return self._admin

    # -- stores ---------------------------------------------------------------------------------
    def store_names(self) -> tuple[str, ...]:
        """Every store of the app, ``default`` first. Example: ``('default', 'b')``."""
        return self.app.stores.names

    def for_store(self, name: str) -> Api:
        """The data API of another store of the same app (sharing its connections).

        Example: ``api.for_store("b").queue("default").size()``.
        """
        if name == self.store_name:
            return self
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = Api(self.app, store=name)
        return view

    def overview(self) -> Overview:
        """Stats of every store and their sum; a store that cannot be read is reported with
        its error and left out of the sum. Example: ``api.overview().total.processed``."""
        parts: list[StoreStats] = []
        for name in self.store_names():
            url = self.app.stores.display_url(name)
            try:
                parts.append(StoreStats(name, url, self.for_store(name).stats()))
            except RedisError as exc:
                log.warning("store %s cannot be read: %s", name, exc)
                parts.append(StoreStats(name, url, error=f"{type(exc).__name__}: {exc}"))
        total = sum_stats([p.stats for p in parts if p.stats is not None])
        return Overview(total, parts)

    def history_all(self, days: int = 7, start: dt.date | None = None) -> History:
        """:meth:`history` summed across every store. Example: ``api.history_all(30)``."""
        parts = [self.for_store(name).history(days, start) for name in self.store_names()]
        processed = {d: sum(p.processed[d] for p in parts) for d in parts[0].processed}
        failed = {d: sum(p.failed[d] for p in parts) for d in parts[0].failed}
        return History(processed, failed)

    def now(self) -> float:
        """Epoch seconds from the app's clock."""
        return self.app.clock.time()

    # -- stats ----------------------------------------------------------------------------------
    def stats(self) -> Stats:
        """Totals, set sizes, queue sizes, busy threads and the default queue's latency.

        Example: ``api.stats().retry_size``.
        """
        counters = self.admin.counters()
        names = self.admin.queue_names()
        sizes = dict(zip(names, self.admin.queue_sizes(names), strict=True))
        latency = 0.0
        if counters.default_oldest is not None:
            latency = JobRecord.from_raw(counters.default_oldest, "default").latency(self.now())
        return Stats(
            processed=counters.processed,
            failed=counters.failed,
            scheduled_size=counters.scheduled_size,
            retry_size=counters.retry_size,
            dead_size=counters.dead_size,
            interrupted_size=counters.interrupted_size,
            processes_size=counters.processes_size,
            workers_size=self.work.size(),
            enqueued=sum(sizes.values()),
            default_queue_latency=latency,
            queues=dict(sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))),
        )

    def history(self, days: int = 7, start: dt.date | None = None) -> History:
        """Processed/failed per UTC day for ``days`` days ending at ``start`` (default: today).

        Example: ``api.history(30).failed``.
        """
        if not 1 <= days <= 5 * 365:
            raise ValueError(f"days must be between 1 and 1825 (5 years are kept), got {days}")
        first = start or dt.datetime.fromtimestamp(self.now(), dt.UTC).date()
        dates = [(first - dt.timedelta(days=i)).isoformat() for i in range(days)]
        processed = self.admin.daily("processed", dates)
        failed = self.admin.daily("failed", dates)
        return History(
            dict(zip(dates, processed, strict=True)), dict(zip(dates, failed, strict=True))
        )

    def reset_stats(self, *stats: Literal["processed", "failed"]) -> None:
        """Zero the all-time counters (both when none are named). Example: ``api.reset_stats()``."""
        self.admin.reset_stats(stats or ("processed", "failed"))

    # -- queues and sets ------------------------------------------------------------------------
    def queues(self) -> list[Queue]:
        """Every known queue, by name. Example: ``[q.name for q in api.queues()]``."""
        return [Queue(self, name) for name in self.admin.queue_names()]

    def queue(self, name: str) -> Queue:
        """The queue called ``name`` (it need not exist yet). Example: ``api.queue("mail")``."""
        return Queue(self, name)

    @property
    def scheduled(self) -> ScheduledSet:
        """The ``schedule`` set. Example: ``api.scheduled.retry(jid)`` runs a job now."""
        return ScheduledSet(self)

    @property
    def retries(self) -> RetrySet:
        """The ``retry`` set. Example: ``api.retries.retry_all()``."""
        return RetrySet(self)

    @property
    def dead(self) -> DeadSet:
        """The ``dead`` set. Example: ``api.dead.jobs(0, 10)``."""
        return DeadSet(self)

    @property
    def interrupted(self) -> InterruptedSet:
        """The ``interrupted`` set. Example: ``api.interrupted.size()``."""
        return InterruptedSet(self)

    def trimmed(self) -> dict[str, int]:
        """Entries the ``dead`` and ``interrupted`` sets dropped to stay within their size and
        age limits (each also logged with its jid). Example: ``api.trimmed()["dead"]``."""
        return self.admin.trimmed()

    @property
    def processes(self) -> ProcessSet:
        """Live processes. Example: ``api.processes.quiet_all()``."""
        return ProcessSet(self)

    @property
    def work(self) -> WorkSet:
        """Running jobs. Example: ``[w.job.jid for w in api.work.list()]``."""
        return WorkSet(self)

    @property
    def operations(self) -> OperationsApi:
        """Tracked bulk operations (created on first use). Example: ``api.operations.list()``."""
        if self._operations is None:
            self._operations = OperationsApi.of(self)
        return self._operations

    # -- actions --------------------------------------------------------------------------------
    def enqueue(
        self,
        class_name: str,
        args: Sequence[Any] = (),
        *,
        queue: str | None = None,
        at: float | None = None,
    ) -> EnqueueResult:
        """Enqueue a job by its wire class name (no Python class needed), through the client
        middleware. Example: ``api.enqueue("HardWorker", ["bob", 5], queue="critical")``.
        """
        options = {"queue": queue} if queue else {}
        return self.app.client.enqueue(class_name, list(args), options, at=at)

    def notify_death(self, payload: Payload) -> None:
        """Run the app's death handlers for a job killed through the API (as Sidekiq does)."""
        error = RuntimeError("Job killed by API")
        for handler in self.app.death_handlers:
            try:
                handler(payload, error)
            except Exception:
                log.exception("death handler %r failed", handler)

    def purge_prefix(self) -> int:
        """Delete every key under the configured key prefix; refuses when there is none.

        Example: ``Api.from_settings(Settings(key_prefix="scratch")).purge_prefix()``.
        """
        if not self.settings.key_prefix:
            raise ConfigurationError(
                "refusing to delete keys without a key prefix: it would wipe the whole Redis"
            )
        return self.admin.purge_prefix()


def redis_url(settings: Settings) -> str:
    """The Redis URL in use: the configured one, else the embedded server's (started if needed).

    Example: ``redis_url(Settings())`` -> ``'unix:///home/me/.local/state/conveyor/redis.sock'``.
    """
    return resolve_url(settings)


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server under ``settings.state_dir``; False if none was running.

    Example: ``stop_embedded(Settings(state_dir="/tmp/state"))``.
    """
    return stop_embedded_server(settings.state_dir)


__all__ = [
    "PAGE",
    "Api",
    "DeadSet",
    "FailedItemRecord",
    "FinishedOperationRecord",
    "History",
    "InterruptedSet",
    "JobRecord",
    "JobSet",
    "KillableSet",
    "OperationRecord",
    "OperationsApi",
    "Overview",
    "ProcessInfo",
    "ProcessSet",
    "Progress",
    "Queue",
    "RedisError",
    "RetrySet",
    "ScheduledSet",
    "Stats",
    "StoreStats",
    "Work",
    "WorkSet",
    "redis_url",
    "stop_embedded",
    "sum_stats",
]
