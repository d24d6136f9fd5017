"""Client (enqueue) and server (execute) middleware chains (SPEC CORE-9).

A middleware is a class with no-op hooks. ``before_*`` hooks run in chain order, ``after_*``
hooks in reverse order, and only for middleware whose ``before_*`` ran. Each middleware
declares the job options it adds in ``options``; declaring a job with an option nobody
declares fails at declaration time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from conveyor.core._protocols import AppLike
from conveyor.core.job import Job
from conveyor.core.payload import Payload
from conveyor.errors import ConfigurationError
from conveyor.redis import Store
from conveyor.redis.calls import Plan
from conveyor.redis.scripts import ScriptCall
from conveyor.routing import DEFAULT_STORE


class Middleware:
    """Base of every middleware. ``options`` names the job options this middleware reads."""

    options: ClassVar[frozenset[str]] = frozenset()

    def check_option(self, job: str, option: str, value: Any) -> Any:
        """Check one of this middleware's ``options`` (``None``: not set) and return it
        normalized; raise :class:`ConfigurationError` naming ``job``, the option and the value.
        Runs at declaration and in ``.set()``, so both give the same message."""
        return value


@dataclass
class EnqueueContext:
    """One job on its way to Redis. A client middleware may change ``job`` or call :meth:`drop`."""

    app: AppLike
    job_class: type[Job] | None
    job: Payload
    #: Epoch seconds for scheduled jobs, else ``None``.
    at: float | None = None
    dropped: str | None = None
    #: Extra facts for the caller (e.g. ``duplicate_of``); returned on the enqueue result.
    info: dict[str, Any] = field(default_factory=dict)
    #: The name of the store the job is pushed to (routing rules, ``store=``).
    store_name: str = DEFAULT_STORE

    @property
    def store(self) -> Store:
        """The store the job is pushed to: a middleware keeping state beside the job (a
        deduplication cookie) writes it here, so the job and its state share one Redis."""
        return self.app.stores.get(self.store_name)

    def drop(self, reason: str) -> None:
        """Do not push this job; ``reason`` is reported to the caller."""
        self.dropped = reason


@dataclass
class JobContext:
    """One job being executed."""

    app: AppLike
    job_class: type[Job]
    instance: Job
    job: Payload
    queue: str
    #: The payload exactly as fetched (what the working list holds).
    raw: str
    #: Identity of the worker process running it (``None`` in the inline/fake testing modes).
    identity: str | None = None
    #: Set by a middleware to skip ``perform`` (the job then counts as done).
    skipped: str | None = None
    #: Set by a middleware that moved the job elsewhere itself, atomically with taking it out
    #: of the working list (e.g. deferred by a concurrency limit): not counted, not acked.
    handed_off: bool = False
    state: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped = reason

    def hand_off(self, reason: str) -> None:
        """Skip ``perform``: the job now lives elsewhere (the middleware moved it)."""
        self.skipped = reason
        self.handed_off = True


@dataclass
class FetchedJob:
    """A job a worker process fetched, decoded once, before and after it runs."""

    queue: str
    #: The payload exactly as fetched (what the working list holds).
    raw: str
    #: The decoded payload, or ``None`` when it is not a valid job.
    job: Payload | None
    #: The registered class, or ``None`` when this process does not know it.
    job_class: type[Job] | None
    #: Shared with the :class:`JobContext` of the run (what ``prepare_batch`` did for this job).
    state: dict[str, Any] = field(default_factory=dict)
    #: Set by ``prepare_batch`` when it moved the job elsewhere itself: the job is not run.
    handed_off: str | None = None
    #: Set by ``prepare_batch`` when it took a shared resource for the job before it runs and
    #: that resource is scarce (a concurrency slot of a class near its limit): the
    #: process then holds no more jobs ahead than its set prefetch, so waiting jobs do not
    #: take what running ones elsewhere need; and the job's acknowledgement, which frees the
    #: resource, goes at once instead of waiting for more finished jobs to share its round
    #: trip (the slot would sit idle meanwhile).
    holds_slot: bool = False
    #: Set by ``prepare_batch`` when the job's class has a concurrency limit of this many
    #: slots, taken at fetch: the process keeps its prefetch within it
    #: (:meth:`~conveyor.core.units.LimitBackoff.limited`).
    slot_limit: int = 0
    #: Identity of the worker process that fetched it.
    identity: str | None = None
    #: Set after the run when it raised.
    failed: bool = False


class ClientMiddleware(Middleware):
    def applies_to(self, job_class: type[Job] | None) -> bool:
        """Whether this middleware matters for enqueues of ``job_class`` (``None``: a class
        name this process does not know). When no middleware applies, enqueueing skips the
        chain and a bulk enqueue takes the template fast path."""
        return True

    def before_enqueue(self, ctx: EnqueueContext) -> None:
        """Runs before the push, in chain order."""

    def before_enqueue_many(self, contexts: list[EnqueueContext]) -> None:
        """The same for a batch (bulk enqueue); override to do one round trip per batch."""
        for ctx in contexts:
            self.before_enqueue(ctx)

    def enqueue_plan(self, contexts: list[EnqueueContext]) -> Plan[None]:
        """What the client runs, sync or async (``aperform_async``). A middleware that needs
        Redis overrides this and yields its calls (:mod:`conveyor.redis.calls`) instead of
        making them, so the same logic serves both clients; the default runs
        :meth:`before_enqueue_many`, right for middleware that do no I/O."""
        self.before_enqueue_many(contexts)
        return
        yield  # pragma: no cover - makes this a generator

    def after_enqueue(self, ctx: EnqueueContext) -> None:
        """Runs after the push (or the drop), in reverse order."""


class ServerMiddleware(Middleware):
    """Per-job hooks, plus optional batch hooks a worker process calls so a middleware can do
    its Redis work for a whole fetched batch in one round trip. A middleware using the batch
    hooks must still work from the per-job hooks alone (the testing modes run no batches)."""

    def applies_to(self, job_class: type[Job]) -> bool:
        """Whether this middleware's per-job hooks matter for ``job_class``. Returning False
        for classes it ignores spares every job of them the calls (plain jobs then run with
        no middleware overhead at all)."""
        return True

    def prepare_batch(self, jobs: list[FetchedJob]) -> None:
        """Called by the fetcher for each fetched batch, before any of its jobs runs."""

    def settle_batch(self, jobs: list[FetchedJob]) -> None:
        """Called for each batch of finished jobs, before they are acknowledged. Raising a Redis
        error makes the worker retry the batch; do nothing here that must not run twice."""

    def settle_calls(self, jobs: list[FetchedJob]) -> list[ScriptCall]:
        """Script calls to make for a batch of finished jobs in the round trip of their
        acknowledgement, just before it (after :meth:`settle_batch`): no round trip of their
        own. They must be safe to run twice (a failed acknowledgement is retried with them);
        their failure is logged and does not hold back the acknowledgement."""
        return []

    def abandon_batch(self, jobs: list[FetchedJob]) -> None:
        """Called for prepared jobs given back unstarted (quiet, shutdown)."""

    def worker_stopped(self, identity: str) -> None:
        """Called when the worker process ``identity`` stops gracefully, after its last
        acknowledgement and before it unregisters: give back what it held for its jobs."""

    def before_perform(self, ctx: JobContext) -> None:
        """Runs before ``perform``, in chain order. Raising fails the job like ``perform`` would."""

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        """Runs after ``perform`` (also when it raised), in reverse order."""


M = TypeVar("M", bound=Middleware)


class Chain(Generic[M]):
    """An ordered chain with insertion relative to existing entries (Sidekiq-style).

    >>> class A(Middleware): ...
    >>> class B(Middleware): ...
    >>> chain: Chain[Middleware] = Chain()
    >>> chain.add(A()); chain.insert_before(A, B())
    >>> [type(m).__name__ for m in chain]
    ['B', 'A']
    """

    def __init__(self) -> None:
        self._entries: list[M] = []
        #: Bumped on every change, so users of the chain can cache what they derive from it.
        self.version = 0

    def __iter__(self) -> Iterator[M]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def entries(self) -> list[M]:
        return list(self._entries)

    def add(self, middleware: M) -> None:
        self.remove(type(middleware))
        self._entries.append(middleware)
        self.version += 1

    def prepend(self, middleware: M) -> None:
        self.remove(type(middleware))
        self._entries.insert(0, middleware)
        self.version += 1

    def insert_before(self, existing: type[Middleware], middleware: M) -> None:
        self.remove(type(middleware))
        self._entries.insert(self._index(existing), middleware)
        self.version += 1

    def insert_after(self, existing: type[Middleware], middleware: M) -> None:
        self.remove(type(middleware))
        self._entries.insert(self._index(existing) + 1, middleware)
        self.version += 1

    def remove(self, kind: type[Middleware]) -> None:
        self._entries = [m for m in self._entries if type(m) is not kind]
        self.version += 1

    def _index(self, kind: type[Middleware]) -> int:
        for i, m in enumerate(self._entries):
            if type(m) is kind:
                return i
        raise ConfigurationError(f"middleware {kind.__name__} is not in the chain")

    def declared_options(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for m in self._entries:
            out |= m.options
        return out
