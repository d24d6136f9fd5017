"""Idempotent jobs and deduplication (SPEC DEDUP-1 … DEDUP-9).

A job class declares ``idempotent=True``; idempotent jobs are deduplicated by default with the
``until_executing`` strategy. Enqueueing a job whose twin (same class, same idempotency
arguments) is queued and not started yet is then dropped, and the enqueue result says so::

    @app.job(idempotent=True, deduplicate=deduplicate("until_executed", ttl=300,
                                                      if_deduplicated="reschedule_once"))
    def refresh_authorizations(user_id: int) -> None: ...

    result = refresh_authorizations.perform_async(7)
    if not result:
        print(result.dropped)           # 'duplicate of 3f2a...'

Deduplication gives exactly-once *effects* only together with idempotency: delivery stays at
least once (a crash can run a job twice).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.core._protocols import AppLike
from conveyor.core.app import App, app_of
from conveyor.core.job import Job
from conveyor.core.middleware import (
    ClientMiddleware,
    EnqueueContext,
    FetchedJob,
    JobContext,
    ServerMiddleware,
)
from conveyor.core.payload import Payload, dumps
from conveyor.core.processor import Processor
from conveyor.errors import ConfigurationError
from conveyor.features.flags import Flags
from conveyor.redis.dedup import Claim, DedupStore

Strategy = Literal["until_executing", "until_executed"]
DEFAULT_TTL = 6 * 3600.0
OPTIONS = frozenset({"idempotent", "deduplicate", "idempotency_arguments"})


@dataclass(frozen=True)
class Deduplicate:
    """How a job class deduplicates. Build it with :func:`deduplicate`."""

    strategy: Strategy = "until_executing"
    #: Seconds the cookie lives at most (it is normally released by the strategy).
    ttl: float = DEFAULT_TTL
    #: Also deduplicate scheduled jobs; their cookie lives until the run time plus ``ttl``.
    including_scheduled: bool = False
    #: ``"reschedule_once"``: run once more after finishing if a duplicate was dropped meanwhile.
    if_deduplicated: Literal["reschedule_once"] | None = None
    #: Deduplicate only while this feature flag is on (an unset flag counts as on).
    feature_flag: str | None = None


def deduplicate(
    strategy: Strategy = "until_executing",
    *,
    ttl: float = DEFAULT_TTL,
    including_scheduled: bool = False,
    if_deduplicated: Literal["reschedule_once"] | None = None,
    feature_flag: str | None = None,
) -> Deduplicate:
    """A deduplication policy, checked at once.

    >>> deduplicate("until_executed", ttl=300).ttl
    300
    """
    if strategy not in ("until_executing", "until_executed"):
        raise ConfigurationError(
            f"deduplicate strategy {strategy!r} is unknown; use 'until_executing' or "
            "'until_executed'"
        )
    if not isinstance(ttl, int | float) or ttl <= 0:
        raise ConfigurationError(f"deduplicate ttl must be seconds > 0, got {ttl!r}")
    if if_deduplicated not in (None, "reschedule_once"):
        raise ConfigurationError(
            f"if_deduplicated={if_deduplicated!r} is unknown; use None or 'reschedule_once'"
        )
    return Deduplicate(strategy, ttl, including_scheduled, if_deduplicated, feature_flag)


UNTIL_EXECUTING = Deduplicate()


def policy_of(job_class: type[Job]) -> Deduplicate | None:
    """The class's effective policy: its own, the default for idempotent classes, or None."""
    options = job_class.conveyor_options
    policy = options.get("deduplicate")
    if isinstance(policy, Deduplicate):
        return policy
    if policy is not None:
        raise ConfigurationError(
            f"{job_class.__name__}: deduplicate= must be built with "
            "conveyor.features.dedup.deduplicate()"
        )
    return UNTIL_EXECUTING if options.get("idempotent") else None


def idempotency_args(job_class: type[Job], args: Sequence[Any]) -> list[Any]:
    """The arguments that count for deduplication (``idempotency_arguments`` picks them)."""
    choose = job_class.conveyor_options.get("idempotency_arguments")
    if choose is None:
        return list(args)
    if callable(choose):
        picker: Callable[[Sequence[Any]], Sequence[Any]] = choose
        return list(picker(args))
    return [args[i] for i in choose if i < len(args)]


def digest(job_class: type[Job], args: Sequence[Any]) -> str:
    text = f"{job_class.wire_name()}:{dumps(idempotency_args(job_class, args))}"
    return hashlib.sha256(text.encode()).hexdigest()


class DedupClientMiddleware(ClientMiddleware):
    options = OPTIONS

    def applies_to(self, job_class: type[Job] | None) -> bool:
        return job_class is not None and policy_of(job_class) is not None

    def before_enqueue_many(self, contexts: list[EnqueueContext]) -> None:
        wanted = [(ctx, claim) for ctx in contexts if (claim := _claim_for(ctx)) is not None]
        if not wanted:
            return
        holders = DedupStore(contexts[0].app.store).claim_many([c for _, c in wanted])
        for (ctx, claim), holder in zip(wanted, holders, strict=True):
            if holder is None:
                ctx.job["idempotency_key"] = claim.digest
                continue
            ctx.info["duplicate_of"] = holder
            if claim.mode == "drop":
                ctx.drop(f"duplicate of {holder}")
            else:
                ctx.job["duplicate-of"] = holder

    def before_enqueue(self, ctx: EnqueueContext) -> None:
        self.before_enqueue_many([ctx])


def _claim_for(ctx: EnqueueContext) -> Claim | None:
    """The cookie claim this enqueue needs, or None when it is not deduplicated (nor in the
    inline/fake testing modes, which need no Redis)."""
    job_class = ctx.job_class
    if job_class is None or not ctx.app.client.live:
        return None
    policy = policy_of(job_class)
    if policy is None or not _active(ctx.app, policy):
        return None
    delay = 0.0 if ctx.at is None else ctx.at - ctx.app.clock.time()
    if delay > 0 and not policy.including_scheduled:
        return None
    wal = ctx.job.get("wal_locations")
    return Claim(
        digest(job_class, ctx.job["args"]),
        ctx.job["jid"],
        int((policy.ttl + max(0.0, delay)) * 1000),
        # An idempotent job's twin is dropped; any other is only marked duplicate-of.
        "drop" if job_class.conveyor_options.get("idempotent") else "mark",
        wal if isinstance(wal, dict) else {},
    )


class DedupServerMiddleware(ServerMiddleware):
    """Releases (until_executing) or marks running (until_executed) the cookies of a whole
    fetched batch in one round trip, and releases until_executed cookies with the batch's
    acknowledgement; the per-job hooks do the same where no batch runs."""

    def __init__(self, app: App) -> None:
        self.app = app

    def applies_to(self, job_class: type[Job]) -> bool:
        try:
            return policy_of(job_class) is not None
        except ConfigurationError:
            return True

    def prepare_batch(self, jobs: list[FetchedJob]) -> None:
        starts = [(u, job, policy) for u in jobs if (policy := _policy_for(u)) and (job := u.job)]
        if not starts:
            return
        found = DedupStore(self.app.store).start_many(
            [(job["idempotency_key"], job["jid"], _mode(policy)) for _, job, policy in starts]
        )
        for (unit, job, policy), wal in zip(starts, found, strict=True):
            if wal:
                job["dedup_wal_locations"] = wal
            unit.state["dedup"] = (job["idempotency_key"], policy)
            unit.state["dedup_batched"] = True

    def settle_batch(self, jobs: list[FetchedJob]) -> None:
        done = [
            u
            for u in jobs
            if u.state.get("dedup_batched") and u.state["dedup"][1].strategy == "until_executed"
        ]
        if not done:
            return
        releases = [(u.state["dedup"][0], u.job["jid"]) for u in done if u.job is not None]
        flags = DedupStore(self.app.store).release_many(releases)
        for unit, flag in zip(done, flags, strict=True):
            unit.state.pop("dedup_batched", None)
            _reschedule_if_asked(self.app, unit.job_class, unit.job, flag, unit.failed)

    def before_perform(self, ctx: JobContext) -> None:
        if ctx.state.get("dedup_batched"):
            return
        key = ctx.job.get("idempotency_key")
        if not isinstance(key, str):
            return
        policy = policy_of(ctx.job_class) or UNTIL_EXECUTING
        wal = DedupStore(ctx.app.store).start(key, ctx.job["jid"], _mode(policy))
        if wal:
            ctx.job["dedup_wal_locations"] = wal
        ctx.state["dedup"] = (key, policy)

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        held = ctx.state.get("dedup")
        if held is None or ctx.state.get("dedup_batched"):
            return  # none, or released with the batch's acknowledgement
        key, policy = held
        if policy.strategy != "until_executed":
            return
        flag = DedupStore(ctx.app.store).release(key, ctx.job["jid"])
        _reschedule_if_asked(ctx.app, ctx.job_class, ctx.job, flag, error is not None)


def _mode(policy: Deduplicate) -> Literal["release", "running"]:
    return "running" if policy.strategy == "until_executed" else "release"


def _policy_for(unit: FetchedJob) -> Deduplicate | None:
    """The policy of a fetched job that holds (or may hold) a cookie, else None."""
    if unit.job is None or unit.job_class is None:
        return None
    if not isinstance(unit.job.get("idempotency_key"), str):
        return None
    try:
        return policy_of(unit.job_class) or UNTIL_EXECUTING
    except ConfigurationError:
        return UNTIL_EXECUTING


def _reschedule_if_asked(
    app: AppLike, job_class: type[Job] | None, job: Payload | None, flag: int, failed: bool
) -> None:
    """reschedule_once: run once more if a twin was dropped while the job ran (and it did not
    fail: its retry covers the twin)."""
    if job_class is None or job is None or flag != 1 or failed:
        return
    policy = policy_of(job_class)
    if policy is not None and policy.if_deduplicated == "reschedule_once":
        app.client.enqueue(job_class, job["args"], {"queue": job["queue"]})


def _active(app: AppLike, policy: Deduplicate) -> bool:
    if policy.feature_flag is None:
        return True
    return Flags.of(app).enabled(policy.feature_flag, default=True)


def install(app: App) -> None:
    """Add the deduplication middleware to ``app`` (``conveyor.App`` does this for you)."""
    app.client_middleware.add(DedupClientMiddleware())
    app.server_middleware.add(DedupServerMiddleware(app))


def perform_twice(job_class: type[Job], *args: Any) -> None:
    """Run a job's ``perform`` twice with the same arguments, through the server middleware
    and against the real Redis, with nothing mocked — then assert the state yourself
    (the analogue of GitLab's 'an idempotent worker' shared example).

    >>> perform_twice(RefreshCache, project_id)     # doctest: +SKIP
    >>> assert cache_entries(project_id) == 1       # doctest: +SKIP
    """
    if not job_class.conveyor_options.get("idempotent"):
        raise ConfigurationError(
            f"{job_class.__name__} is not declared idempotent; declare idempotent=True once "
            "running it twice is safe"
        )
    app = app_of(job_class)
    _, job = app.client.build(job_class, list(args), {})
    processor = Processor(app)
    try:
        for _ in range(2):
            instance = job_class.instantiate()
            instance.job = dict(job)
            processor.run(job_class, instance, instance.job, job["queue"], dumps(job))
    finally:
        processor.runner.close()
