"""Cron (SPEC LIMIT-3): jobs enqueued on a cron schedule, exactly once per tick however many
processes run.

Every worker process looks at the entries every second; the tick is claimed and the job pushed
in one Redis script, so only the first process to see a tick enqueues it. Only the latest tick
counts: ticks missed while no worker ran are skipped, and so is the latest one once it is older
than the entry's ``grace`` (default 5 minutes).

>>> from conveyor.features.cron import schedule
>>> schedule(app, "nightly-report", "0 3 * * *", Report, tz="Asia/Seoul")   # doctest: +SKIP

Entries declared in code are written to Redis when a worker starts (keeping an entry's
enabled/disabled state); entries can be disabled, enabled or destroyed at run time (CLI
``conveyor cron``). Cron pushes jobs directly, without client middleware, like Sidekiq's
scheduled-set poller. A job class with ``feature_flag="name"`` is not enqueued while that flag
is off.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from conveyor.core.extensions import ExtensionKey
from conveyor.core.job import Job
from conveyor.core.payload import check_args, dumps, new_jid
from conveyor.errors import ConfigurationError, NotFoundError
from conveyor.features.flags import Flags
from conveyor.redis.cron import CronStore

if TYPE_CHECKING:
    from conveyor.core.app import App

log = logging.getLogger("conveyor.cron")

TICK_INTERVAL = 1.0
DEFAULT_GRACE = 300.0


@dataclass(frozen=True)
class CronEntry:
    name: str
    #: Cron expression (5 fields, or 6 with seconds), croniter syntax.
    schedule: str
    #: Wire name of the job class.
    job_class: str
    args: list[Any] = field(default_factory=list)
    queue: str = "default"
    tz: str = "UTC"
    enabled: bool = True
    #: Seconds after its time a tick may still be enqueued.
    grace: float = DEFAULT_GRACE
    created_at: float = 0.0

    def previous_tick(self, now: float) -> float:
        """The latest tick at or before ``now`` (epoch seconds)."""
        start = dt.datetime.fromtimestamp(now, ZoneInfo(self.tz))
        return float(croniter(self.schedule, start).get_prev(float))

    def next_tick(self, now: float) -> float:
        start = dt.datetime.fromtimestamp(now, ZoneInfo(self.tz))
        return float(croniter(self.schedule, start).get_next(float))


def validate(entry: CronEntry) -> CronEntry:
    if not entry.name or "|" in entry.name:
        raise ConfigurationError(f"cron entry name {entry.name!r} must be non-empty, without '|'")
    if not croniter.is_valid(entry.schedule):
        raise ConfigurationError(
            f"cron entry {entry.name!r}: {entry.schedule!r} is not a valid cron expression; "
            "write e.g. '*/5 * * * *' (minute hour day month weekday)"
        )
    try:
        ZoneInfo(entry.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError(
            f"cron entry {entry.name!r}: unknown time zone {entry.tz!r}; use an IANA name "
            "such as 'UTC' or 'Asia/Seoul'"
        ) from None
    if entry.grace <= 0:
        raise ConfigurationError(f"cron entry {entry.name!r}: grace must be > 0 seconds")
    check_args(entry.args, entry.job_class)
    return entry


def schedule(
    app: App,
    name: str,
    expression: str,
    job_class: type[Job] | str,
    *,
    args: Sequence[Any] = (),
    queue: str | None = None,
    tz: str = "UTC",
    grace: float = DEFAULT_GRACE,
) -> CronEntry:
    """Declare a cron entry in code; workers write it to Redis when they start."""
    if isinstance(job_class, str):
        wire, default_queue = job_class, "default"
    else:
        wire = job_class.wire_name()
        default_queue = str(job_class.conveyor_options.get("queue") or "default")
    entry = validate(
        CronEntry(name, expression, wire, list(args), queue or default_queue, tz, True, grace)
    )
    declared = app.extensions.setdefault(CRON_ENTRIES, {})
    declared[name] = entry
    return entry


#: Cron entries declared on an app, by name.
CRON_ENTRIES: ExtensionKey[dict[str, CronEntry]] = ExtensionKey("cron")


class Cron:
    """Cron entries of one app, in Redis: those of the store ``store`` (default: the one the
    process serves, ``Settings.store``)."""

    def __init__(self, app: App, store: str | None = None) -> None:
        self.app = app
        self._store_name = store
        self._synced = False

    @property
    def store_name(self) -> str:
        # Read when used: installing cron on a new App must not load its settings yet.
        return self._store_name or self.app.settings.store

    @property
    def _store(self) -> CronStore:
        return CronStore(self.app.stores.get(self.store_name))

    def entries(self) -> list[CronEntry]:
        return sorted(
            (_decode(name, raw) for name, raw in self._store.all().items()), key=lambda e: e.name
        )

    def get(self, name: str) -> CronEntry:
        raw = self._store.get(name)
        if raw is None:
            raise NotFoundError(f"no cron entry named {name!r}; `conveyor cron list` shows them")
        return _decode(name, raw)

    def last_tick(self, name: str) -> float | None:
        return self._store.last_tick(name)

    def put(self, entry: CronEntry) -> CronEntry:
        validate(entry)
        if not entry.created_at:
            entry = replace(entry, created_at=self.app.clock.time())
        definition = {k: v for k, v in asdict(entry).items() if k != "name"}
        self._store.put(entry.name, json.dumps(definition))
        return entry

    def enable(self, name: str) -> CronEntry:
        return self.put(replace(self.get(name), enabled=True))

    def disable(self, name: str) -> CronEntry:
        return self.put(replace(self.get(name), enabled=False))

    def destroy(self, name: str) -> None:
        if not self._store.delete(name):
            raise NotFoundError(f"no cron entry named {name!r}")

    def enqueue_now(self, name: str) -> str:
        """Enqueue an entry's job once, now, outside its schedule; returns the jid."""
        entry = self.get(name)
        result = self.app.client.enqueue(entry.job_class, entry.args, {"queue": entry.queue})
        return result.jid

    def routed_queue(self, entry: CronEntry) -> str | None:
        """The queue the entry's job is pushed to when it is routed to this store, else
        ``None``: then a process of that store fires it, never this one, so an entry fires
        once however many stores there are. Example: ``Cron(app).routed_queue(entry)`` ->
        ``'default'`` (or ``None`` when a rule sends its job to another store)."""
        route = self.app.client.route(entry.job_class, entry.queue)
        return route.queue if route.store == self.store_name else None

    def sync(self) -> None:
        """Write code-declared entries to Redis, keeping the enabled state of existing ones;
        each entry goes to the store its job is routed to."""
        declared = self.app.extensions.get(CRON_ENTRIES) or {}
        existing = {e.name: e for e in self.entries()}
        for name, entry in declared.items():
            if self.routed_queue(entry) is None:
                continue
            old = existing.get(name)
            if old is None:
                self.put(entry)
            elif (old.schedule, old.job_class, old.args, old.queue, old.tz, old.grace) != (
                entry.schedule,
                entry.job_class,
                entry.args,
                entry.queue,
                entry.tz,
                entry.grace,
            ):
                self.put(replace(entry, enabled=old.enabled, created_at=old.created_at))

    def tick(self) -> int:
        """Enqueue every due tick not enqueued yet; returns how many this call enqueued."""
        if not self._synced:
            self.sync()
            self._synced = True
        now = self.app.clock.time()
        enqueued = 0
        for entry in self.entries():
            if not entry.enabled or self._gated(entry.job_class):
                continue
            queue = self.routed_queue(entry)
            if queue is not None:
                enqueued += self._enqueue(replace(entry, queue=queue), now)
        return enqueued

    def _gated(self, wire_name: str) -> bool:
        job_class = self.app.registry.get(wire_name)
        flag = job_class.conveyor_options.get("feature_flag") if job_class else None
        return bool(flag) and not Flags.of(self.app).enabled(str(flag))

    def _enqueue(self, entry: CronEntry, now: float) -> int:
        try:
            tick = entry.previous_tick(now)
        except (ValueError, KeyError) as exc:
            log.error("cron entry %s cannot compute its schedule: %s", entry.name, exc)
            return 0
        if tick < entry.created_at or now - tick > entry.grace:
            return 0
        job = {
            "class": entry.job_class,
            "args": entry.args,
            "queue": entry.queue,
            "retry": True,
            "jid": new_jid(),
            "created_at": now,
            "enqueued_at": now,
            "cron": entry.name,
            "cron_at": tick,
        }
        job_class = self.app.registry.get(entry.job_class)
        if job_class is not None:
            job["retry"] = job_class.conveyor_options.get("retry", True)
        if self._store.enqueue_tick(entry.name, tick, entry.queue, dumps(job)):
            log.info("cron %s enqueued tick %.0f as %s", entry.name, tick, job["jid"])
            return 1
        return 0


def _decode(name: str, raw: str) -> CronEntry:
    data = json.loads(raw)
    return CronEntry(name=name, **{k: v for k, v in data.items() if k in _FIELDS})


_FIELDS = {f for f in CronEntry.__dataclass_fields__ if f != "name"}


#: The app's cron runner (set by :func:`install`).
CRON_RUNNER: ExtensionKey[Cron] = ExtensionKey("cron_runner")


def install(app: App) -> None:
    cron = Cron(app)
    app.extensions[CRON_RUNNER] = cron
    app.add_periodic("cron", TICK_INTERVAL, cron.tick)
