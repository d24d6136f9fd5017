"""Per-class concurrency limits across all processes (SPEC LIMIT-1, LIMIT-2).

``@app.job(concurrency_limit=5)`` lets at most five jobs of the class run at once in the whole
cluster. A job fetched while the limit is reached is deferred (moved, in the same Redis step
that takes it out of the worker's working list, to a per-class waiting list) and resumed in
order as slots free: when a limited job finishes, and every ``resume_interval`` in every
process. Slots of a killed process come back when its liveness key expires.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.core.middleware import FetchedJob, JobContext, ServerMiddleware
from conveyor.errors import ConfigurationError
from conveyor.redis.limits import DEFERRED, TAKEN_SCARCE, Acquire, LimitStore
from conveyor.redis.scripts import ScriptCall

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.core.job import Job

log = logging.getLogger("conveyor.concurrency")

#: A slot reserved for a resumed job is kept this long for it to be fetched.
RESERVATION_TTL = 300.0
RESUME_INTERVAL = 1.0


def limit_of(job_class: type[Job]) -> int | None:
    limit = job_class.conveyor_options.get("concurrency_limit")
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"{job_class.__name__}: concurrency_limit={limit!r} must be a whole number >= 1"
        )
    return limit


class ConcurrencyLimitMiddleware(ServerMiddleware):
    """Takes slots for a whole fetched batch in one round trip (a job over the limit is
    deferred before it takes a worker thread) and frees them in the round trip of the batch's
    acknowledgement; the per-job hooks do the same one job at a time where no batch runs."""

    options = frozenset({"concurrency_limit"})

    def __init__(self, app: App) -> None:
        self.app = app

    def applies_to(self, job_class: type[Job]) -> bool:
        try:
            return limit_of(job_class) is not None
        except ConfigurationError:
            return True  # before_perform fails the job with the message

    def prepare_batch(self, jobs: list[FetchedJob]) -> None:
        wanted = [(unit, request) for unit in jobs if (request := _request(unit)) is not None]
        if not wanted:
            return
        app = self.app
        granted = LimitStore(app.store).acquire_many([a for _, a in wanted], app.clock.time())
        for (unit, request), got in zip(wanted, granted, strict=True):
            unit.slot_limit = request.limit
            if got != DEFERRED:
                unit.state["slot"] = (request.job_class, request.limit, request.member)
                unit.state["slot_batched"] = True
                # Slots are scarce (jobs wait for them): jobs held ahead would crowd out
                # others (the prefetch stays at its floor), and a finished job's slot must
                # not sit idle for an acknowledgement window.
                unit.holds_slot = got == TAKEN_SCARCE
            else:
                unit.handed_off = (
                    f"deferred: {request.job_class} is at its concurrency limit of {request.limit}"
                )

    def settle_calls(self, jobs: list[FetchedJob]) -> list[ScriptCall]:
        # The slots are freed in the acknowledgement's round trip, just before it.
        slots = [u.state["slot"] for u in jobs if u.state.get("slot_batched")]
        if not slots:
            return []
        app = self.app
        return [LimitStore(app.store).release_call(slots, app.clock.time(), RESERVATION_TTL)]

    def abandon_batch(self, jobs: list[FetchedJob]) -> None:
        self._release([u for u in jobs if u.state.get("slot_batched")])

    def _release(self, units: list[FetchedJob]) -> None:
        if not units:
            return
        app = self.app
        slots = [u.state["slot"] for u in units]
        LimitStore(app.store).release_many(slots, app.clock.time(), RESERVATION_TTL)
        for unit in units:
            unit.state.pop("slot_batched", None)

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
        if slot is None or ctx.state.get("slot_batched"):
            return  # none, or freed with the batch's acknowledgement
        name, limit, member = slot
        LimitStore(ctx.app.store).release(
            name, limit, ctx.app.clock.time(), RESERVATION_TTL, member
        )


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


def resume_deferred(app: App) -> int:
    """Put deferred jobs of every limited class this process knows into free slots (one
    script call for all of them)."""
    slots = [
        (job_class.wire_name(), limit, "")
        for job_class in set(app.registry.values())
        if (limit := _safe_limit(job_class)) is not None
    ]
    return LimitStore(app.store).release_many(slots, app.clock.time(), RESERVATION_TTL)


def _safe_limit(job_class: type[Job]) -> int | None:
    try:
        return limit_of(job_class)
    except ConfigurationError:
        return None


def install(app: App) -> None:
    app.server_middleware.add(ConcurrencyLimitMiddleware(app))
    app.add_periodic("concurrency-resume", RESUME_INTERVAL, lambda: resume_deferred(app))


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
