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

import datetime as dt
import functools
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
from conveyor.core.options import seconds
from conveyor.core.payload import Payload, dumps
from conveyor.core.processor import Processor
from conveyor.errors import ConfigurationError
from conveyor.features.flags import NAME, Flags
from conveyor.redis.calls import Plan, on_store, run_sync
from conveyor.redis.dedup import Claim, DedupStore, claim_plan
from conveyor.redis.keys import Keys

Strategy = Literal["until_executing", "until_executed"]
DEFAULT_TTL = 6 * 3600.0
OPTIONS = frozenset({"idempotent", "deduplicate", "idempotency_arguments"})


@dataclass(frozen=True)
class Deduplicate:
    """How a job class deduplicates. Build it with :func:`deduplicate` (or write the strategy
    alone: ``deduplicate="until_executed"``)."""

    strategy: Strategy = "until_executing"
    #: Seconds the cookie lives at most (it is normally released by the strategy).
    ttl: float = DEFAULT_TTL
    #: Also deduplicate scheduled jobs; their cookie lives until the run time plus ``ttl``.
    including_scheduled: bool = False
    #: ``"reschedule_once"``: run once more after finishing if a duplicate was dropped meanwhile.
    if_deduplicated: Literal["reschedule_once"] | None = None
    #: Deduplicate only while this feature flag is on (a flag never set is off: docs/flags.md).
    feature_flag: str | None = None
    #: until_executed: release the key when the job fails, so a twin enqueued while it waits
    #: for its retry is accepted. Default False, as in GitLab: the key is kept until the job
    #: finally succeeds or dies (its retry covers the twin).
    release_on_failure: bool = False


def deduplicate(
    strategy: Strategy = "until_executing",
    *,
    ttl: float | dt.timedelta = DEFAULT_TTL,
    including_scheduled: bool = False,
    if_deduplicated: Literal["reschedule_once"] | None = None,
    feature_flag: str | None = None,
    release_on_failure: bool = False,
) -> Deduplicate:
    """A deduplication policy, checked at once. ``ttl`` is seconds or a timedelta.

    >>> deduplicate("until_executed", ttl=dt.timedelta(minutes=5)).ttl
    300.0
    """
    if strategy not in ("until_executing", "until_executed"):
        raise ConfigurationError(
            f"deduplicate strategy {strategy!r} is unknown; use 'until_executing' or "
            "'until_executed'"
        )
    seconds_ = seconds(ttl, "deduplicate ttl", allow_none=False)
    assert seconds_ is not None
    for name, value in (
        ("including_scheduled", including_scheduled),
        ("release_on_failure", release_on_failure),
    ):
        if not isinstance(value, bool):
            raise ConfigurationError(f"deduplicate {name}={value!r} must be True or False")
    if if_deduplicated not in (None, "reschedule_once"):
        raise ConfigurationError(
            f"if_deduplicated={if_deduplicated!r} is unknown; use None or 'reschedule_once'"
        )
    if if_deduplicated and strategy == "until_executing":
        raise ConfigurationError(
            "if_deduplicated='reschedule_once' needs strategy 'until_executed': with "
            "until_executing the key is gone once the job starts, so no twin is ever dropped "
            "while it runs and it would never reschedule"
        )
    if feature_flag is not None and (
        not isinstance(feature_flag, str) or not NAME.match(feature_flag)
    ):
        raise ConfigurationError(
            f"deduplicate feature_flag={feature_flag!r} is not a flag name (lowercase letters, "
            "digits, '_', '.', ':' or '-')"
        )
    return Deduplicate(
        strategy, seconds_, including_scheduled, if_deduplicated, feature_flag, release_on_failure
    )


UNTIL_EXECUTING = Deduplicate()


def policy_of(job_class: type[Job]) -> Deduplicate | None:
    """The class's effective policy: its own, the default for idempotent classes, or None."""
    options = job_class.conveyor_options
    policy = check_policy(job_class.__name__, options.get("deduplicate"))
    if policy is not None:
        return policy
    return UNTIL_EXECUTING if options.get("idempotent") else None


def check_policy(job: str, value: Any) -> Deduplicate | None:
    """``deduplicate=`` as a policy: a :func:`deduplicate` result, a strategy name (what Ruby's
    ``deduplicate :until_executed`` reads as), or None."""
    if value is None or isinstance(value, Deduplicate):
        return value
    if isinstance(value, str):
        if value in ("until_executing", "until_executed"):
            return deduplicate(value)  # type: ignore[arg-type]
        raise ConfigurationError(
            f"{job}: deduplicate={value!r} is not a strategy; use 'until_executing', "
            "'until_executed' or conveyor.features.dedup.deduplicate(...)"
        )
    raise ConfigurationError(
        f"{job}: deduplicate={value!r} must be a strategy name ('until_executed') or built "
        "with conveyor.features.dedup.deduplicate()"
    )


def _check_arguments(job: str, value: Any) -> Any:
    if value is None or callable(value):
        return value
    if isinstance(value, list | tuple) and all(
        isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value
    ):
        return tuple(value)
    raise ConfigurationError(
        f"{job}: idempotency_arguments={value!r} must be a list of argument positions (e.g. "
        "[0, 2]) or a function of the arguments"
    )


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


def check_option(job: str, option: str, value: Any) -> Any:
    """The checks of ``idempotent``, ``deduplicate`` and ``idempotency_arguments``."""
    if option == "deduplicate":
        return check_policy(job, value)
    if option == "idempotency_arguments":
        return _check_arguments(job, value)
    if value is not None and not isinstance(value, bool):
        raise ConfigurationError(f"{job}: {option}={value!r} must be True or False")
    return value


class DedupClientMiddleware(ClientMiddleware):
    options = OPTIONS

    def check_option(self, job: str, option: str, value: Any) -> Any:
        return check_option(job, option, value)

    def applies_to(self, job_class: type[Job] | None) -> bool:
        return job_class is not None and policy_of(job_class) is not None

    def enqueue_plan(self, contexts: list[EnqueueContext]) -> Plan[None]:
        """Claim the cookies of a batch in one script call per store (sync or asyncio alike):
        a cookie lives in the store its job goes to."""
        wanted: list[tuple[EnqueueContext, Claim]] = []
        for ctx in contexts:
            claim = yield from _claim_plan(ctx)
            if claim is not None:
                wanted.append((ctx, claim))
        if not wanted:
            return
        keys = Keys(contexts[0].app.settings.key_prefix)
        for store in dict.fromkeys(ctx.store_name for ctx, _ in wanted):
            group = [(ctx, claim) for ctx, claim in wanted if ctx.store_name == store]
            claims = [claim for _, claim in group]
            holders = yield from on_store(store, claim_plan(keys, claims))
            _settle(group, holders)

    def before_enqueue_many(self, contexts: list[EnqueueContext]) -> None:
        if contexts:
            app = contexts[0].app
            run_sync(lambda: app.store, self.enqueue_plan(contexts), app.stores.get)

    def before_enqueue(self, ctx: EnqueueContext) -> None:
        self.before_enqueue_many([ctx])


def _settle(wanted: list[tuple[EnqueueContext, Claim]], holders: list[str | None]) -> None:
    """Keep the claimed jobs, drop (or mark) those whose twin holds the cookie."""
    for (ctx, claim), holder in zip(wanted, holders, strict=True):
        if holder is None:
            ctx.job["idempotency_key"] = claim.digest
            continue
        ctx.info["duplicate_of"] = holder
        if claim.mode == "drop":
            ctx.drop(f"duplicate of {holder}")
        else:
            ctx.job["duplicate-of"] = holder


def _claim_plan(ctx: EnqueueContext) -> Plan[Claim | None]:
    """The cookie claim this enqueue needs, or None when it is not deduplicated (nor in the
    inline/fake testing modes, which need no Redis)."""
    job_class = ctx.job_class
    if job_class is None or not ctx.app.client.live:
        return None
    policy = policy_of(job_class)
    if policy is None:
        return None
    flag = policy.feature_flag
    if flag is not None and not (yield from Flags.of(ctx.app).enabled_plan(flag)):
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
            if u.state.get("dedup_batched")
            and u.state["dedup"][1].strategy == "until_executed"
            and not _keeps_key(self.app, u.state["dedup"][1], u.job, u.failed)
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
        if _keeps_key(ctx.app, policy, ctx.job, error is not None):
            return
        flag = DedupStore(ctx.app.store).release(key, ctx.job["jid"])
        _reschedule_if_asked(ctx.app, ctx.job_class, ctx.job, flag, error is not None)


def _keeps_key(app: AppLike, policy: Deduplicate, job: Payload | None, failed: bool) -> bool:
    """until_executed keeps its key while a failed job waits for its retry (GitLab's
    semantics), unless the policy says ``release_on_failure``. The job's retry settings tell
    whether a retry follows; a job that dies instead releases it in :func:`_release_dead`."""
    if not failed or policy.release_on_failure or job is None:
        return False
    retry = job.get("retry", True)
    if retry is False or retry is None:
        return False
    most = retry if isinstance(retry, int) and not isinstance(retry, bool) else None
    if most is None:
        most = app.settings.max_retries
    count = job.get("retry_count")
    following = count + 1 if isinstance(count, int) and not isinstance(count, bool) else 0
    return following < most


def _release_dead(app: AppLike, job: Payload, exc: BaseException | None = None) -> None:
    """Death handler: a deduplicated job that died gives its key back (a job discarded by its
    ``retry_in`` hook keeps it until the ttl)."""
    key = job.get("idempotency_key")
    jid = job.get("jid")
    if isinstance(key, str) and isinstance(jid, str):
        DedupStore(app.store).release(key, jid)


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
        # Into the store the job ran in (this process's), where its cookie lives.
        options = {"queue": job["queue"], "store": app.settings.store}
        app.client.enqueue(job_class, job["args"], options)


def install(app: App) -> None:
    """Add the deduplication middleware to ``app`` (``conveyor.App`` does this for you)."""
    app.client_middleware.add(DedupClientMiddleware())
    app.server_middleware.add(DedupServerMiddleware(app))
    app.death_handlers.append(functools.partial(_release_dead, app))


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
