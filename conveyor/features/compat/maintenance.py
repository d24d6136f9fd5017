"""Deploy maintenance (SPEC COMPAT-3, COMPAT-4): delete every instance of retired job classes,
and move a renamed queue's jobs to the new name. Both are safe while workers and producers run,
and safe to run again.

>>> remove_jobs(app, ["MyDeprecatedWorker"], cron="destroy")            # doctest: +SKIP
RemovalReport(... removed={'queue:default': 12, 'retry': 1}, cron={'my_cron': 'destroyed'})
>>> migrate_queue(app, "old_queue_name", "new_queue_name")              # doctest: +SKIP
MigrationReport(... moved={'schedule': 3, 'queue:old_queue_name': 120})

How they stay safe: lists are read in chunks (``LRANGE``), sorted sets with ``ZSCAN``, and each
entry is removed or moved by a Lua script only if its exact bytes are still where they were
read. An entry a worker took meanwhile is left to that worker; one pushed meanwhile is seen by a
later chunk or by the next run (``follow=`` repeats runs for a while). New payloads for moved
jobs are written in Python, never re-encoded by Lua's cjson (which would turn ``[]`` into
``{}`` and reformat numbers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.core.job import Job
from conveyor.core.payload import Payload, dumps, parse, queue_of
from conveyor.errors import ConfigurationError, PayloadError
from conveyor.redis import Store
from conveyor.redis.maintenance import ListPlace, MaintenanceStore
from conveyor.redis.store import ZSetName

if TYPE_CHECKING:
    from conveyor.core.app import App

log = logging.getLogger("conveyor.maintenance")

CronAction = Literal["destroy", "disable"]
#: Called as work advances: (place label, entries examined there so far, entries there at start).
Progress = Callable[[str, int, int], None]

CHUNK = 500
#: Seconds between runs when following (``follow=``).
FOLLOW_INTERVAL = 1.0


@dataclass
class RemovalReport:
    """What :func:`remove_jobs` did (or, with ``dry_run``, would do)."""

    classes: tuple[str, ...]
    dry_run: bool = False
    #: Place (``queue:<name>``, ``schedule``, ``retry``, ``dead``, ``interrupted``,
    #: ``deferred:<class>``, ``working:<identity>``) -> jobs removed there.
    removed: dict[str, int] = field(default_factory=dict)
    #: Cron entry -> ``destroyed``, ``disabled``, ``already disabled`` or ``changed meanwhile``.
    cron: dict[str, str] = field(default_factory=dict)
    #: Jobs of these classes running right now in live processes (never touched: they finish,
    #: as a no-op if the class is deprecated).
    running: int = 0
    #: Jobs of these classes in dead processes' working lists, left for recovery to requeue
    #: (pass ``include_working=True`` to remove them, or run again after recovery).
    orphaned: int = 0
    passes: int = 0

    @property
    def total(self) -> int:
        return sum(self.removed.values())

    def add(self, place: str, count: int) -> None:
        if count:
            self.removed[place] = self.removed.get(place, 0) + count


@dataclass
class MigrationReport:
    """What :func:`migrate_queue` did (or, with ``dry_run``, would do)."""

    old: str
    new: str
    dry_run: bool = False
    #: Place (``queue:<old>``, ``schedule``, ``retry``, ``dead``) -> jobs moved or rewritten.
    moved: dict[str, int] = field(default_factory=dict)
    #: Jobs left on the old queue when the last run ended (pushed meanwhile): run again.
    remaining: int = 0
    #: Whether the old name was dropped from the ``queues`` set (its list was empty).
    forgotten: bool = False
    passes: int = 0

    @property
    def total(self) -> int:
        return sum(self.moved.values())

    def add(self, place: str, count: int) -> None:
        if count:
            self.moved[place] = self.moved.get(place, 0) + count


def _store_and_clock(target: App | Store) -> tuple[Store, Clock]:
    if isinstance(target, Store):
        return target, SYSTEM_CLOCK
    return target.store, target.clock


def wire_names(classes: Iterable[type[Job] | str]) -> tuple[str, ...]:
    """Wire names to remove: strings as given, job classes with their aliases."""
    names: list[str] = []
    for item in classes:
        if isinstance(item, str):
            if not item:
                raise ConfigurationError("remove_jobs got an empty class name")
            names.append(item)
        elif isinstance(item, type) and issubclass(item, Job):
            names += [item.wire_name(), *item.conveyor_options.get("aliases", ())]
        else:
            raise ConfigurationError(
                f"remove_jobs takes job classes or wire names, got {item!r}; pass e.g. "
                "['MyDeprecatedWorker']"
            )
    if not names:
        raise ConfigurationError("remove_jobs needs at least one job class name")
    return tuple(sorted(set(names)))


# -- remove_jobs --------------------------------------------------------------------------------


def remove_jobs(
    target: App | Store,
    classes: Iterable[type[Job] | str],
    *,
    include_dead: bool = False,
    include_working: bool = False,
    cron: CronAction = "destroy",
    dry_run: bool = False,
    follow: float = 0.0,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> RemovalReport:
    """Delete every job of ``classes`` (wire names, or job classes with their aliases) from the
    queues, ``schedule``, ``retry`` and deferred lists; with ``include_dead`` also from ``dead``
    and ``interrupted``; with ``include_working`` also from the working lists of dead processes
    (a live process's working list is never touched). Their cron entries are destroyed or
    disabled (``cron=``) first, so no new instance appears meanwhile.

    Re-runnable; ``follow=N`` repeats the removal for N seconds to catch late arrivals. With
    ``dry_run`` nothing changes and the report counts what would be removed.

    >>> remove_jobs(app, ["MyDeprecatedWorkerOne", "MyDeprecatedWorkerTwo"]).total  # doctest: +SKIP
    14
    """
    if cron not in ("destroy", "disable"):
        raise ConfigurationError(f"cron={cron!r} is not an action; use 'destroy' or 'disable'")
    if chunk < 1:
        raise ConfigurationError(f"chunk must be >= 1, got {chunk}")
    store, clock = _store_and_clock(target)
    names = wire_names(classes)
    report = RemovalReport(names, dry_run)
    remover = _Remover(MaintenanceStore(store), names, report, chunk, progress)
    remover.retire_cron(cron)
    remover.run_pass(include_dead=include_dead, include_working=include_working)
    deadline = clock.monotonic() + (0.0 if dry_run else follow)
    while clock.monotonic() < deadline:
        clock.sleep(min(FOLLOW_INTERVAL, deadline - clock.monotonic()))
        remover.run_pass(include_dead=include_dead, include_working=include_working)
    remover.count_running()
    log.info(
        "%s %d job(s) of %s: %s",
        "would remove" if dry_run else "removed",
        report.total,
        ", ".join(names),
        report.removed or "none",
    )
    return report


class _Remover:
    def __init__(
        self,
        ms: MaintenanceStore,
        names: tuple[str, ...],
        report: RemovalReport,
        chunk: int,
        progress: Progress | None,
    ) -> None:
        self.ms = ms
        self.names = frozenset(names)
        # Prefilter on the text before parsing: a payload can only match if a name appears.
        self.needles = tuple(set(names) | {json.dumps(n)[1:-1] for n in names})
        self.report = report
        self.chunk = chunk
        self.progress = progress

    def matches(self, raw: str) -> bool:
        """Whether ``raw`` is a job of one of the classes (ActiveJob's ``wrapped`` too)."""
        if not any(needle in raw for needle in self.needles):
            return False
        try:
            job = json.loads(raw)
        except ValueError:
            return False
        return isinstance(job, dict) and (
            job.get("class") in self.names or job.get("wrapped") in self.names
        )

    def run_pass(self, *, include_dead: bool, include_working: bool) -> None:
        """Upstream places first (where jobs come from), so a job moving along the pipeline
        while we sweep is met again downstream: dead processes' working lists and deferred
        lists feed the queues, the schedule and retry sets feed them too."""
        ms = self.ms
        self.report.passes += 1
        for identity in ms.dead_identities():
            place = ListPlace("working", identity)
            if include_working:
                self.sweep_list(place)
            else:
                self.report.orphaned += sum(map(self.matches, ms.list_range(place, 0, -1)))
        for name in sorted(self.names & set(ms.deferred_classes())):
            self.sweep_list(ListPlace("deferred", name))
        zsets: list[ZSetName] = ["schedule", "retry"]
        for zset in zsets:
            self.sweep_zset(zset)
        for queue in ms.queue_names():
            self.sweep_list(ListPlace("queue", queue))
        if include_dead:
            graveyards: list[ZSetName] = ["dead", "interrupted"]
            for zset in graveyards:
                self.sweep_zset(zset)

    def sweep_list(self, place: ListPlace) -> None:
        ms = self.ms
        length = ms.list_length(place)
        start = examined = 0
        while length:
            entries = ms.list_range(place, start, start + self.chunk - 1)
            if not entries:
                break
            hits = [(start + i, raw) for i, raw in enumerate(entries) if self.matches(raw)]
            removed = 0
            if hits and self.report.dry_run:
                self.report.add(place.label, len(hits))
            elif hits:
                # Our own removals shift the later entries left: the next chunk starts earlier.
                removed = ms.remove_from_list(place, hits, from_tail=start > length // 2)
                if removed < 0:
                    return  # the owner of this working list came back to life
                self.report.add(place.label, removed)
            start += len(entries) - removed
            examined += len(entries)
            if self.progress:
                self.progress(place.label, examined, length)
            if len(entries) < self.chunk:
                break

    def sweep_zset(self, zset: ZSetName) -> None:
        ms = self.ms
        length = ms.zset_length(zset)
        if not length:
            return
        batch: list[str] = []
        examined = 0
        for raw in ms.zset_scan(zset, self.chunk):
            examined += 1
            if self.matches(raw):
                batch.append(raw)
            if len(batch) >= self.chunk:
                self._remove_from_zset(zset, batch)
                batch = []
            if self.progress and examined % self.chunk == 0:
                self.progress(zset, examined, length)
        self._remove_from_zset(zset, batch)
        if self.progress:
            self.progress(zset, examined, length)

    def _remove_from_zset(self, zset: ZSetName, batch: list[str]) -> None:
        if self.report.dry_run:
            self.report.add(zset, len(batch))
        else:
            self.report.add(zset, self.ms.remove_from_zset(zset, batch))

    def retire_cron(self, action: CronAction) -> None:
        for name, raw in sorted(self.ms.cron_definitions().items()):
            try:
                definition = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(definition, dict) or definition.get("job_class") not in self.names:
                continue
            self.report.cron[name] = self._retire_one(name, raw, definition, action)

    def _retire_one(self, name: str, raw: str, definition: Payload, action: CronAction) -> str:
        done = "destroyed" if action == "destroy" else "disabled"
        if action == "disable" and definition.get("enabled") is False:
            return "already disabled"
        if self.report.dry_run:
            return f"would be {done}"
        if action == "destroy":
            changed = self.ms.cron_destroy(name, raw)
        else:
            changed = self.ms.cron_replace(name, raw, json.dumps({**definition, "enabled": False}))
        return done if changed else "changed meanwhile; run again"

    def count_running(self) -> None:
        """Jobs of these classes in live working lists (reported, never touched)."""
        ms = self.ms
        dead = set(ms.dead_identities())
        for identity in ms.store.registered_identities():
            if identity not in dead:
                entries = ms.list_range(ListPlace("working", identity), 0, -1)
                self.report.running += sum(map(self.matches, entries))


# -- migrate_queue ------------------------------------------------------------------------------


def migrate_queue(
    target: App | Store,
    old: str,
    new: str,
    *,
    include_dead: bool = False,
    dry_run: bool = False,
    follow: float = 0.0,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> MigrationReport:
    """Move the jobs of queue ``old`` to queue ``new``: queued jobs move (oldest first, behind
    jobs already on ``new``), scheduled and retrying jobs (and dead ones with ``include_dead``)
    get their ``queue`` field rewritten in place. ``retry_queue`` equal to ``old`` is
    rewritten too. Each entry moves atomically and only if it is still where it was read.

    Safe while producers still push to ``old``: what they push during a run is moved if the run
    reaches it, else reported as ``remaining``; run again, or ``follow=N`` to keep moving late
    arrivals for N seconds. Workers should listen on both queues during the transition.

    >>> migrate_queue(app, "old_queue_name", "new_queue_name").total      # doctest: +SKIP
    123
    """
    if not old or not new or old == new:
        raise ConfigurationError(
            f"migrate_queue needs two different queue names, got {old!r} and {new!r}"
        )
    if chunk < 1:
        raise ConfigurationError(f"chunk must be >= 1, got {chunk}")
    store, clock = _store_and_clock(target)
    report = MigrationReport(old, new, dry_run)
    mover = _Mover(MaintenanceStore(store), report, chunk, progress)
    mover.run_pass(include_dead)
    deadline = clock.monotonic() + (0.0 if dry_run else follow)
    while clock.monotonic() < deadline:
        clock.sleep(min(FOLLOW_INTERVAL, deadline - clock.monotonic()))
        mover.run_pass(include_dead)
    ms = mover.ms
    report.remaining = 0 if dry_run else ms.list_length(ListPlace("queue", old))
    if not dry_run and report.remaining == 0:
        report.forgotten = ms.forget_queue_if_empty(old)
    log.info(
        "%s %d job(s) from queue %s to %s: %s",
        "would move" if dry_run else "moved",
        report.total,
        old,
        new,
        report.moved or "none",
    )
    return report


def requeued(raw: str, old: str, new: str, *, moved: bool = True) -> str:
    """``raw`` with its ``queue`` set to ``new`` (for a job ``moved`` off the old queue; else
    only a ``queue`` equal to ``old``), and ``retry_queue`` ``old`` rewritten too. Other fields
    are untouched. A payload that is not a job moves as it is (a worker dead-letters it there).

    >>> requeued('{"class":"A","args":[],"queue":"old"}', "old", "new")
    '{"class":"A","args":[],"queue":"new"}'
    """
    try:
        job = parse(raw)
    except PayloadError:
        return raw
    if moved or queue_of(job) == old:
        job["queue"] = new
    if job.get("retry_queue") == old:
        job["retry_queue"] = new
    return dumps(job)


def _belongs(raw: str, old: str) -> bool:
    """Whether a sorted-set entry goes to queue ``old`` when it runs."""
    if old not in raw:
        return False
    try:
        job = parse(raw)
    except PayloadError:
        return False
    return queue_of(job) == old or job.get("retry_queue") == old


class _Mover:
    def __init__(
        self, ms: MaintenanceStore, report: MigrationReport, chunk: int, progress: Progress | None
    ) -> None:
        self.ms = ms
        self.report = report
        self.chunk = chunk
        self.progress = progress

    def run_pass(self, include_dead: bool) -> None:
        # The sets first: a scheduled job promoted to the old queue while we work is then
        # found on the queue, which comes last.
        self.report.passes += 1
        zsets: list[ZSetName] = (
            ["schedule", "retry", "dead"] if include_dead else ["schedule", "retry"]
        )
        for zset in zsets:
            self.rewrite_zset(zset)
        self.move_queue()

    def rewrite_zset(self, zset: ZSetName) -> None:
        report, ms = self.report, self.ms
        length = ms.zset_length(zset)
        if not length:
            return
        batch: list[tuple[str, str]] = []
        examined = 0
        for raw in ms.zset_scan(zset, self.chunk):
            examined += 1
            if _belongs(raw, report.old):
                batch.append((raw, requeued(raw, report.old, report.new, moved=False)))
            if len(batch) >= self.chunk:
                self._flush(zset, batch)
                batch = []
        self._flush(zset, batch)
        if self.progress:
            self.progress(zset, examined, length)

    def _flush(self, zset: ZSetName, batch: list[tuple[str, str]]) -> None:
        if self.report.dry_run:
            self.report.add(zset, len(batch))
        else:
            self.report.add(zset, self.ms.rewrite_zset(zset, batch))

    def move_queue(self) -> None:
        """Move from the consuming end (oldest first) until the jobs there at the start have
        been read; jobs pushed meanwhile move too if the run gets to them."""
        report, ms = self.report, self.ms
        place = ListPlace("queue", report.old)
        label = place.label
        length = ms.list_length(place)
        if report.dry_run:
            report.add(label, length)
            return
        examined = 0
        while examined < length:
            entries = ms.list_range(place, -self.chunk, -1)  # newest ... oldest
            if not entries:
                break
            moves = [(raw, requeued(raw, report.old, report.new)) for raw in reversed(entries)]
            report.add(label, ms.move_between_queues(report.old, report.new, moves))
            examined += len(entries)
            if self.progress:
                self.progress(label, min(examined, length), length)
