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
from conveyor.core.extensions import ExtensionKey
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


@dataclass
class Declarations:
    """Intended removals and queue renames of an app (``app.extensions[COMPAT]``), declared
    with :func:`conveyor.features.compat.lock.declare_removed` / ``declare_queue_renamed``."""

    removed: set[str] = field(default_factory=set)
    queue_renames: dict[str, str] = field(default_factory=dict)


#: An app's :class:`Declarations`.
COMPAT: ExtensionKey[Declarations] = ExtensionKey("compat")


def declarations(app: App) -> Declarations:
    """The app's declarations (created empty on first use)."""
    found = app.extensions.get(COMPAT)
    if not isinstance(found, Declarations):
        found = app.extensions.setdefault(COMPAT, Declarations())
    return found


def _store_and_clock(target: App | Store) -> tuple[Store, Clock]:
    if isinstance(target, Store):
        return target, SYSTEM_CLOCK
    return target.store, target.clock


def wire_names(classes: Iterable[type[Job] | str]) -> tuple[str, ...]:
    """Wire names to remove: strings as given, job classes with their aliases. A bare string
    or class is refused (iterating ``"ExampleWorker"`` would remove jobs named ``E``, ``x``...).

    >>> wire_names(["ExampleWorker"])
    ('ExampleWorker',)
    """
    if isinstance(classes, str | bytes | type):
        shown = classes.__name__ if isinstance(classes, type) else repr(classes)
        raise ConfigurationError(
            f"remove_jobs takes a list of job classes or wire names, got {shown} alone; "
            f"pass a list: [{shown}]"
        )
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
    allow_unknown: bool = False,
) -> RemovalReport:
    """Delete every job of ``classes`` (wire names, or job classes with their aliases) from the
    queues, ``schedule``, ``retry`` and deferred lists; with ``include_dead`` also from ``dead``
    and ``interrupted``; with ``include_working`` also from the working lists of dead processes
    (a live process's working list is never touched). Their cron entries are destroyed or
    disabled (``cron=``) first, so no new instance appears meanwhile.

    Re-runnable; ``follow=N`` repeats the removal for N seconds to catch late arrivals. With
    ``dry_run`` nothing changes and the report counts what would be removed.

    A name the app neither registers nor declares removed, and of which no job or cron entry
    exists anywhere, is refused before anything changes (a typo would otherwise report 0
    silently); ``allow_unknown=True`` accepts it.

    >>> remove_jobs(app, ["MyDeprecatedWorkerOne", "MyDeprecatedWorkerTwo"]).total  # doctest: +SKIP
    14
    """
    if cron not in ("destroy", "disable"):
        raise ConfigurationError(f"cron={cron!r} is not an action; use 'destroy' or 'disable'")
    if chunk < 1:
        raise ConfigurationError(f"chunk must be >= 1, got {chunk}")
    store, clock = _store_and_clock(target)
    names = wire_names(classes)
    if not allow_unknown:
        _refuse_unknown_classes(target, MaintenanceStore(store), names, chunk)
    report = RemovalReport(names, dry_run)
    remover = _Remover(MaintenanceStore(store), names, report, chunk, progress)
    remover.retire_cron(cron)
    remover.run_pass(include_dead=include_dead, include_working=include_working)
    deadline = clock.monotonic() + (0.0 if dry_run else follow)
    while clock.monotonic() < deadline:
        clock.sleep(min(FOLLOW_INTERVAL, deadline - clock.monotonic()))
        remover.run_pass(include_dead=include_dead, include_working=include_working)
    remover.count_running()
    if report.total and not dry_run:
        # Remembered, so running it again (a deploy step retried) does not look like a typo.
        store.client.sadd(store.keys.retired_classes, *names)
    log.info(
        "%s %d job(s) of %s: %s",
        "would remove" if dry_run else "removed",
        report.total,
        ", ".join(names),
        report.removed or "none",
    )
    return report


def _refuse_unknown_classes(
    target: App | Store, ms: MaintenanceStore, names: tuple[str, ...], chunk: int
) -> None:
    """Raise for names nothing knows: not registered, not declared removed, no job anywhere."""
    known: set[str] = set()
    if not isinstance(target, Store):
        known = set(target.registry) | declarations(target).removed
    retired = ms.store.client.smembers(ms.store.keys.retired_classes)
    known |= {str(n) for n in retired}
    unknown = []
    for name in (n for n in names if n not in known):
        probe = RemovalReport((name,), dry_run=True)
        remover = _Remover(ms, (name,), probe, chunk, None)
        remover.retire_cron("destroy")
        remover.run_pass(include_dead=True, include_working=True)
        remover.count_running()
        if not (probe.total or probe.cron or probe.running or probe.orphaned):
            unknown.append(name)
    if unknown:
        registered = ", ".join(sorted(known)[:10]) or "none"
        raise ConfigurationError(
            f"remove_jobs: no job class named {', '.join(map(repr, unknown))} is registered "
            f"or declared removed, and no job or cron entry of it exists; check the spelling "
            f"(known here: {registered}), or pass allow_unknown=True (--allow-unknown)"
        )


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
    allow_unknown: bool = False,
) -> MigrationReport:
    """Move the jobs of queue ``old`` to queue ``new``: queued jobs move (oldest first, behind
    jobs already on ``new``), scheduled and retrying jobs (and dead ones with ``include_dead``)
    get their ``queue`` field rewritten in place. ``retry_queue`` equal to ``old`` is
    rewritten too. Each entry moves atomically and only if it is still where it was read.

    Safe while producers still push to ``old``: what they push during a run is moved if the run
    reaches it, else reported as ``remaining``; run again, or ``follow=N`` to keep moving late
    arrivals for N seconds. Workers should listen on both queues during the transition.

    A queue ``old`` that nothing knows (not in the ``queues`` set, no job registered or
    scheduled for it, no rename declared) is refused: a typo would otherwise move 0 jobs
    silently. ``allow_unknown=True`` accepts it.

    >>> migrate_queue(app, "old_queue_name", "new_queue_name").total      # doctest: +SKIP
    123
    """
    if not old or not new or old == new:
        raise ConfigurationError(
            f"migrate_queue needs two different queue names, got {old!r} and {new!r}"
        )
    if chunk < 1:
        raise ConfigurationError(f"chunk must be >= 1, got {chunk}")
    for label, name in (("old", old), ("new", new)):
        if not isinstance(name, str):
            raise ConfigurationError(f"migrate_queue: {label}={name!r} must be a queue name")
    store, clock = _store_and_clock(target)
    if not allow_unknown:
        _refuse_unknown_queue(target, MaintenanceStore(store), old, chunk)
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
    if report.total and not dry_run:
        store.client.sadd(store.keys.retired_queues, old)
    log.info(
        "%s %d job(s) from queue %s to %s: %s",
        "would move" if dry_run else "moved",
        report.total,
        old,
        new,
        report.moved or "none",
    )
    return report


def _refuse_unknown_queue(target: App | Store, ms: MaintenanceStore, old: str, chunk: int) -> None:
    queues = ms.queue_names()
    if old in queues or ms.list_length(ListPlace("queue", old)):
        return
    if ms.store.client.sismember(ms.store.keys.retired_queues, old):
        return  # moved by an earlier run
    if not isinstance(target, Store):
        if old in declarations(target).queue_renames:
            return
        for job_class in target.registry.values():
            options = job_class.conveyor_options
            if old in (options.get("queue"), options.get("retry_queue")):
                return
    probe = MigrationReport(old, old + "\x00probe", dry_run=True)
    _Mover(ms, probe, chunk, None).run_pass(include_dead=True)
    if probe.total:
        return
    listed = ", ".join(sorted(queues)[:20]) or "none"
    raise ConfigurationError(
        f"migrate_queue: queue {old!r} is unknown: it is not in the queues set, no registered "
        f"job uses it and no job anywhere is bound for it; check the spelling (queues: "
        f"{listed}), or pass allow_unknown=True (--allow-unknown)"
    )


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
