"""Per-class concurrency limits across all processes (SPEC LIMIT-1, LIMIT-2).

``@app.job(concurrency_limit=5)`` lets at most five jobs of the class run at once in the whole
cluster. A job fetched while the limit is reached is deferred (moved, in the same Redis step
that takes it out of the worker's working list, to a per-class waiting list) and resumed in
order as slots free: when a limited job finishes, and every ``tend_interval`` in every
process. Slots of a killed process come back when its liveness key expires.

A slot is a member of a sorted set in Redis, named by the process holding it. A process keeps
the slots its finished jobs used for its next jobs of the class (:class:`SlotPools`) while no
job waits for a slot: a steady flow of limited jobs then takes and frees slots with no round
trip of its own. Jobs waiting for slots, a class the process stopped fetching, and the
process's graceful stop free them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from conveyor.core.middleware import FetchedJob, JobContext, ServerMiddleware
from conveyor.errors import ConfigurationError
from conveyor.redis.limits import DEFERRED, TAKEN, TAKEN_SCARCE, Acquire, LimitStore
from conveyor.redis.scripts import ScriptCall

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job

log = logging.getLogger("conveyor.concurrency")

#: A slot reserved for a resumed job is kept this long for it to be fetched.
RESERVATION_TTL = 300.0
#: Every this long, each process frees the slots it keeps unused if jobs wait for slots (or
#: it took none of the class for :data:`IDLE_AFTER`), and resumes deferred jobs.
TEND_INTERVAL = 0.25
IDLE_AFTER = 1.0
#: After it met jobs waiting for slots of a class, a process keeps none unused for this long:
#: each finished job's slot goes back with its acknowledgement, and resumes a waiting job.
CONTENDED_FOR = 1.0


def limit_of(job_class: type[Job]) -> int | None:
    limit = job_class.conveyor_options.get("concurrency_limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"{job_class.__name__}: concurrency_limit={limit!r} must be a whole number >= 1"
        )
    return limit


@dataclass
class _Pool:
    free: list[str] = field(default_factory=list)
    limit: int = 0
    taken_at: float = 0.0
    contended_until: float = 0.0

    def take_free(self, job_class: str) -> list[Slot]:
        """Every unused slot, out of the pool."""
        out = [(job_class, self.limit, member) for member in self.free]
        self.free = []
        return out


Slot = tuple[str, int, str]  # (class, limit, member)


class SlotPools:
    """The slots of limited classes each worker process (identity) holds in Redis and no job of
    it uses now, for its next jobs of the class. Thread-safe: the fetcher takes, the worker
    threads give back, the periodic task frees.

    >>> pools = SlotPools()
    >>> pools.take("me", "C", 5, now=0.0) is None, pools.tag("me"), pools.tag("me")
    (True, 's0', 's1')
    >>> pools.give("me", "C", "me|s0", now=0.1), pools.take("me", "C", 5, now=0.2)
    (True, 'me|s0')
    >>> pools.give("me", "C", "me|s0", now=0.3), pools.contended("C", now=0.4)
    (True, [('C', 5, 'me|s0')])
    >>> pools.give("me", "C", "me|s0", now=0.5), pools.idle(now=9.0)
    (False, [])
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._tags: dict[str, int] = {}

    def take(self, identity: str, job_class: str, limit: int, now: float) -> str | None:
        """A slot the process holds unused, or ``None`` (take one in Redis): none while jobs
        of the class wait for slots (they go first)."""
        with self._lock:
            pool = self._pools.setdefault((identity, job_class), _Pool())
            pool.limit, pool.taken_at = limit, now
            if pool.free and now >= pool.contended_until:
                return pool.free.pop()
            return None

    def tag(self, identity: str) -> str:
        """A name for a new slot of the process."""
        with self._lock:
            n = self._tags.get(identity, 0)
            self._tags[identity] = n + 1
        return f"s{n}"

    def give(self, identity: str, job_class: str, member: str, now: float) -> bool:
        """Keep a slot a finished job freed; ``False`` while jobs wait for slots (free it in
        Redis, which resumes one)."""
        with self._lock:
            pool = self._pools.get((identity, job_class))
            if pool is None or now < pool.contended_until:
                return False
            pool.free.append(member)
            return True

    def contended(self, job_class: str, now: float, identity: str | None = None) -> list[Slot]:
        """Jobs of the class wait for slots: the processes (or the one given) keep none
        unused for :data:`CONTENDED_FOR`; returns those they kept, to free."""
        with self._lock:
            out: list[Slot] = []
            for (who, name), pool in self._pools.items():
                if name == job_class and identity in (None, who):
                    pool.contended_until = now + CONTENDED_FOR
                    out += pool.take_free(name)
            return out

    def idle(self, now: float) -> list[Slot]:
        """Take out the unused slots of the classes a process took none of for
        :data:`IDLE_AFTER`, to free."""
        with self._lock:
            out: list[Slot] = []
            for (_, name), pool in self._pools.items():
                if pool.free and now - pool.taken_at >= IDLE_AFTER:
                    out += pool.take_free(name)
            return out

    def restore(self, slots: list[Slot]) -> None:
        """Put back slots taken out to be freed whose freeing failed (a member is named by its
        process: ``<identity>|<tag>``)."""
        with self._lock:
            for name, limit, member in slots:
                identity = member.rpartition("|")[0]
                pool = self._pools.setdefault((identity, name), _Pool(limit=limit))
                pool.free.append(member)

    def drop(self, identity: str) -> list[Slot]:
        """Every unused slot of a process that stops, to free."""
        with self._lock:
            out: list[Slot] = []
            for key in [k for k in self._pools if k[0] == identity]:
                out += self._pools.pop(key).take_free(key[1])
            self._tags.pop(identity, None)
            return out


class ConcurrencyLimitMiddleware(ServerMiddleware):
    """Takes slots for a whole fetched batch, from those the process keeps (no round trip)
    and the rest in one script call (a job over the limit is deferred before it takes a
    worker thread); a finished job's slot is kept for the next job of its class, or, while
    jobs wait for slots, freed in the round trip of the batch's acknowledgement. The per-job
    hooks take and free a slot one job at a time where no batch runs."""

    options = frozenset({"concurrency_limit"})

    def __init__(self, app: App) -> None:
        self.app = app
        self.pools = SlotPools()

    def applies_to(self, job_class: type[Job]) -> bool:
        try:
            return limit_of(job_class) is not None
        except ConfigurationError:
            return True  # before_perform fails the job with the message

    def prepare_batch(self, jobs: list[FetchedJob]) -> None:
        wanted = [(unit, request) for unit in jobs if (request := _request(unit)) is not None]
        if not wanted:
            return
        app, pools = self.app, self.pools
        now = app.clock.monotonic()
        fresh: list[tuple[FetchedJob, Acquire]] = []
        for unit, request in wanted:
            unit.slot_limit = request.limit
            member = pools.take(request.identity, request.job_class, request.limit, now)
            if member is not None:
                _hold(unit, request, member)
            else:
                fresh.append((unit, replace(request, tag=pools.tag(request.identity))))
        if not fresh:
            return
        granted = LimitStore(app.store).acquire_many([a for _, a in fresh], app.clock.time())
        for (unit, request), got in zip(fresh, granted, strict=True):
            if got != DEFERRED:
                _hold(unit, request, request.member)
                # Slots are scarce (jobs wait for them): jobs held ahead would crowd out
                # others (the prefetch stays at its floor), and a finished job's slot must
                # not sit idle for an acknowledgement window.
                unit.holds_slot = got == TAKEN_SCARCE
            else:
                unit.handed_off = (
                    f"deferred: {request.job_class} is at its concurrency limit of {request.limit}"
                )
            if got != TAKEN:
                self._contended(request, now)

    def settle_calls(self, jobs: list[FetchedJob]) -> list[ScriptCall]:
        # Slots not kept for the next jobs are freed in the acknowledgement's round trip.
        slots = [_slot(u) for u in jobs if _freeable(u)]
        if not slots:
            return []
        app = self.app
        return [LimitStore(app.store).release_call(slots, app.clock.time(), RESERVATION_TTL)]

    def abandon_batch(self, jobs: list[FetchedJob]) -> None:
        now = self.app.clock.monotonic()
        free = []
        for unit in jobs:
            if _freeable(unit):
                if self._keep(unit.state, now):
                    continue
                free.append(_slot(unit))
                unit.state.pop("slot_of", None)
        if free:
            app = self.app
            LimitStore(app.store).release_many(free, app.clock.time(), RESERVATION_TTL)

    def before_perform(self, ctx: JobContext) -> None:
        if "slot" in ctx.state:
            return  # taken with the batch
        limit = limit_of(ctx.job_class)
        if limit is None or ctx.identity is None:
            return
        name = ctx.job_class.wire_name()
        store = LimitStore(ctx.app.store)
        acquired = store.acquire(
            name,
            limit,
            identity=ctx.identity,
            jid=ctx.job["jid"],
            raw=ctx.raw,
            now=ctx.app.clock.time(),
        )
        if acquired:
            ctx.state["slot"] = (name, limit, f"{ctx.identity}|{ctx.job['jid']}")
        else:
            ctx.hand_off(f"deferred: {name} is at its concurrency limit of {limit}")

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        slot = ctx.state.get("slot")
        if slot is None:
            return
        if "slot_of" in ctx.state:  # taken with the batch: kept, or freed with its ack
            self._keep(ctx.state, ctx.app.clock.monotonic())
            return
        name, limit, member = slot
        LimitStore(ctx.app.store).release(
            name, limit, ctx.app.clock.time(), RESERVATION_TTL, member
        )

    def _contended(self, request: Acquire, now: float) -> None:
        """A fetched job met jobs waiting for slots, or took the last free one: the process
        keeps no slot unused for a while, and frees those it kept."""
        self._free(self.pools.contended(request.job_class, now, request.identity))

    def _free(self, slots: list[Slot]) -> int:
        """Free slots taken out of the pools in Redis (resuming deferred jobs); if the call
        fails they go back to their pools, to be freed by a later tend (else they would stay
        taken in Redis for as long as the process lives)."""
        if not slots:
            return 0
        app = self.app
        try:
            return LimitStore(app.store).release_many(slots, app.clock.time(), RESERVATION_TTL)
        except Exception:
            self.pools.restore(slots)
            raise

    def _keep(self, state: dict[str, Any], now: float) -> bool:
        """Keep a batch-taken slot for the process's next job of the class, if no job waits."""
        name, _, member = state["slot"]
        if self.pools.give(state["slot_of"], name, member, now):
            state["slot_kept"] = True
            return True
        return False

    def tend(self) -> int:
        """Free the slots processes keep unused for classes they went idle on, resume deferred
        jobs of every limited class into free slots, and where jobs waited for slots free the
        unused ones too; returns how many jobs were resumed. One script call (two where jobs
        waited and slots were kept)."""
        app, pools = self.app, self.pools
        now = app.clock.monotonic()
        idle = pools.idle(now)
        slots = idle + _resume_only(app)
        try:
            resumed, waited = LimitStore(app.store).tend(slots, app.clock.time(), RESERVATION_TTL)
        except Exception:
            pools.restore(idle)
            raise
        kept = [s for name, flag in waited.items() if flag for s in pools.contended(name, now)]
        return resumed + self._free(kept)

    def worker_stopped(self, identity: str) -> None:
        unused = self.pools.drop(identity)
        if unused:
            app = self.app
            LimitStore(app.store).release_many(unused, app.clock.time(), RESERVATION_TTL)


def _hold(unit: FetchedJob, request: Acquire, member: str) -> None:
    unit.state["slot"] = (request.job_class, request.limit, member)
    unit.state["slot_of"] = request.identity


def _slot(unit: FetchedJob) -> tuple[str, int, str]:
    slot: tuple[str, int, str] = unit.state["slot"]
    return slot


def _freeable(unit: FetchedJob) -> bool:
    """Whether a job holds a batch-taken slot it has not given back to its process."""
    return "slot_of" in unit.state and not unit.state.get("slot_kept")


def _request(unit: FetchedJob) -> Acquire | None:
    """The slot a fetched job needs, if its class is limited."""
    if unit.job_class is None or unit.job is None or unit.identity is None:
        return None
    if unit.job_class.conveyor_options.get("deprecated"):
        return None  # a deprecated class is a no-op: it needs no slot
    try:
        limit = limit_of(unit.job_class)
    except ConfigurationError:
        return None  # the per-job hook fails the job with the message
    if limit is None:
        return None
    return Acquire(unit.job_class.wire_name(), limit, unit.identity, unit.job["jid"], unit.raw)


def _middleware(app: App) -> ConcurrencyLimitMiddleware | None:
    for middleware in app.server_middleware:
        if isinstance(middleware, ConcurrencyLimitMiddleware):
            return middleware
    return None


def resume_deferred(app: App) -> int:
    """Put deferred jobs of every limited class this process knows into free slots, freeing
    the slots its workers keep unused where jobs wait (one script call for all of them)."""
    middleware = _middleware(app)
    if middleware is not None:
        return middleware.tend()
    return LimitStore(app.store).release_many(_resume_only(app), app.clock.time(), RESERVATION_TTL)


def _resume_only(app: App) -> list[Slot]:
    """A release entry freeing no slot for every limited class this process knows: the
    release then only resumes its deferred jobs into free slots."""
    return [
        (job_class.wire_name(), limit, "")
        for job_class in set(app.registry.values())
        if (limit := _safe_limit(job_class)) is not None
    ]


def _safe_limit(job_class: type[Job]) -> int | None:
    try:
        return limit_of(job_class)
    except ConfigurationError:
        return None


def install(app: App) -> None:
    middleware = ConcurrencyLimitMiddleware(app)
    app.server_middleware.add(middleware)
    app.add_periodic("concurrency-tend", TEND_INTERVAL, middleware.tend)


def spread(
    job_class: type[Job],
    args_list: Iterable[Sequence[Any]],
    *,
    per_interval: int,
    interval: float,
    start_in: float = 0.0,
) -> list[str]:
    """Schedule jobs so that at most ``per_interval`` start in each ``interval`` seconds
    (SPEC LIMIT-2): the i-th job runs ``start_in + (i // per_interval) * interval`` from now.

    >>> spread(ImportIssue, [[i] for i in ids], per_interval=10, interval=60)  # doctest: +SKIP
    """
    if per_interval < 1 or interval <= 0:
        raise ConfigurationError(
            f"spread needs per_interval >= 1 and interval > 0, got {per_interval} and {interval}"
        )
    jids: list[str] = []
    for i, args in enumerate(args_list):
        delay = start_in + (i // per_interval) * interval
        result = (
            job_class.perform_async(*args) if delay <= 0 else job_class.perform_in(delay, *args)
        )
        if result:
            jids.append(result.jid)
    return jids
