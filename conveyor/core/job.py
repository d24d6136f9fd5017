"""Declaring jobs: subclass :class:`Job` (or decorate a function with ``app.job``) and register
it on an :class:`~conveyor.core.app.App`. Options are class attributes or decorator arguments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from conveyor.clock import Clock
from conveyor.core.arguments import refuse_keywords
from conveyor.core.options import (
    ENQUEUE_OPTIONS,
    OptionCheck,
    check_known,
    normalize_options,
)
from conveyor.core.payload import Payload
from conveyor.errors import ConfigurationError, EnqueueError
from conveyor.routing import DEFAULT_STORE

#: Options the core engine understands, with their defaults.
CORE_OPTIONS: Mapping[str, Any] = {
    "name": None,
    "queue": "default",
    "retry": True,
    "dead": True,
    "backtrace": False,
    "timeout": None,
    "retry_queue": None,
    "max_retries_after_interruption": None,
    "aliases": (),
    "tags": (),
    #: Check the arguments of every enqueue against ``perform``'s signature (off for a class
    #: a Ruby process runs, or a ``perform(*args)`` that takes whatever it is given).
    "check_args": True,
    #: The store its jobs go to, winning over routing rules (docs/scaling.md).
    "store": None,
}

#: Options that travel in the payload (so any process, Ruby or Python, honours them).
PAYLOAD_OPTIONS = ("queue", "retry", "dead", "backtrace", "retry_queue", "tags")


@dataclass(frozen=True)
class EnqueueResult:
    """What an enqueue call did. Truthy when the job was pushed; ``str()`` is the jid.

    ``dropped`` says why a client middleware did not push it (e.g. a deduplicated twin).
    ``replicas`` is how many replicas confirmed the push when ``Settings.min_replicas`` asks
    for confirmation (always at least that many: short of it the enqueue raises
    :class:`~conveyor.errors.NotDurableError`); ``None`` when none was asked for.
    """

    jid: str
    queued: bool = True
    dropped: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    replicas: int | None = None

    def __bool__(self) -> bool:
        return self.queued

    def __str__(self) -> str:
        return self.jid


class Enqueuer(Protocol):
    """What a job class needs to enqueue itself (:class:`~conveyor.core.client.Client`)."""

    def enqueue(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any] | None = None,
        *,
        at: float | None = None,
    ) -> EnqueueResult: ...

    def enqueue_bulk(
        self,
        job_class: type[Job] | str,
        args_list: Sequence[Sequence[Any]],
        options: Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        *,
        at: float | None = None,
    ) -> list[str]: ...

    async def aenqueue(
        self,
        job_class: type[Job] | str,
        args: Sequence[Any],
        options: Mapping[str, Any] | None = None,
        *,
        at: float | None = None,
    ) -> EnqueueResult: ...

    async def aenqueue_bulk(
        self,
        job_class: type[Job] | str,
        args_list: Sequence[Sequence[Any]],
        options: Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        *,
        at: float | None = None,
    ) -> list[str]: ...


class JobOwner(Protocol):
    """What a registered job class needs from its app (:class:`~conveyor.core.app.App`)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def client(self) -> Enqueuer: ...

    def normalize_options(
        self, name: str, options: Mapping[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]: ...


class Job:
    """Base class of job classes.

    >>> class HardWorker(Job):
    ...     queue = "critical"
    ...     def perform(self, name: str, count: int) -> None: ...

    Register it with ``app.register(HardWorker)`` or ``@app.job()``, then enqueue with
    ``HardWorker.perform_async("bob", 5)``.
    """

    #: The ``class`` name this job answers to on the wire (default: the Python class name).
    name: ClassVar[str | None] = None
    queue: ClassVar[str] = "default"
    #: True (default count), an int (max retries; 0 = straight to the dead set) or False.
    retry: ClassVar[bool | int] = True
    dead: ClassVar[bool] = True
    backtrace: ClassVar[bool | int] = False
    timeout: ClassVar[float | None] = None
    retry_queue: ClassVar[str | None] = None
    max_retries_after_interruption: ClassVar[int | None] = None
    aliases: ClassVar[tuple[str, ...]] = ()
    tags: ClassVar[tuple[str, ...]] = ()
    #: The store (Redis instance) its jobs go to, winning over routing rules; ``None``: the
    #: routing rules decide, else the default store (docs/scaling.md).
    store: ClassVar[str | None] = None

    #: Set on registration.
    app: ClassVar[JobOwner]
    conveyor_options: ClassVar[Mapping[str, Any]] = {}

    #: The payload being executed (set before ``perform`` runs).
    job: Payload

    @property
    def jid(self) -> str:
        return str(self.job.get("jid", ""))

    @classmethod
    def instantiate(cls) -> Job:
        """A fresh instance for one execution."""
        return cls()

    def perform(self, *args: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define perform()")

    def retry_in(self, count: int, exc: BaseException, job: Payload) -> float | str | None:
        """Seconds until the next retry, ``"kill"`` (dead set now), ``"discard"`` (drop), or
        ``None`` for the default backoff."""
        return None

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        """Called once when the job will not be retried any more."""

    # -- enqueueing -----------------------------------------------------------------------------
    @classmethod
    def wire_name(cls) -> str:
        return str(cls.conveyor_options.get("name") or cls.__name__)

    @classmethod
    def set(cls, **options: Any) -> Setter:
        """Override options for one enqueue: ``Job.set(queue="low").perform_async(1)``.
        Checked here, with the messages a declaration would get."""
        return Setter(cls, {}).set(**options)

    @classmethod
    def perform_async(cls, *args: Any, **kwargs: Any) -> EnqueueResult:
        """Enqueue one job with positional JSON arguments: ``Job.perform_async(7, "x")``."""
        return Setter(cls, {}).perform_async(*args, **kwargs)

    @classmethod
    def perform_in(cls, seconds: float | dt.timedelta, *args: Any, **kwargs: Any) -> EnqueueResult:
        """Run after ``seconds`` (a number or a timedelta): ``Job.perform_in(60, 7)``."""
        return Setter(cls, {}).perform_in(seconds, *args, **kwargs)

    @classmethod
    def perform_at(cls, at: float | dt.datetime, *args: Any, **kwargs: Any) -> EnqueueResult:
        """Run at epoch seconds or an aware datetime: ``Job.perform_at(when, 7)``."""
        return Setter(cls, {}).perform_at(at, *args, **kwargs)

    @classmethod
    def bulk_perform_async(
        cls, args_list: Iterable[Iterable[Any]], batch_size: int = 1000
    ) -> list[str]:
        """Enqueue many jobs, ``batch_size`` per round trip: ``Job.bulk_perform_async([[1]])``."""
        return Setter(cls, {}).bulk_perform_async(args_list, batch_size)

    # -- enqueueing from asyncio ----------------------------------------------------------------
    @classmethod
    async def aperform_async(cls, *args: Any, **kwargs: Any) -> EnqueueResult:
        """:meth:`perform_async` on redis.asyncio: ``await Job.aperform_async(7)``."""
        return await Setter(cls, {}).aperform_async(*args, **kwargs)

    @classmethod
    async def aperform_in(
        cls, seconds: float | dt.timedelta, *args: Any, **kwargs: Any
    ) -> EnqueueResult:
        """:meth:`perform_in` on redis.asyncio: ``await Job.aperform_in(60, 7)``."""
        return await Setter(cls, {}).aperform_in(seconds, *args, **kwargs)

    @classmethod
    async def aperform_at(cls, at: float | dt.datetime, *args: Any, **kwargs: Any) -> EnqueueResult:
        """:meth:`perform_at` on redis.asyncio: ``await Job.aperform_at(when, 7)``."""
        return await Setter(cls, {}).aperform_at(at, *args, **kwargs)

    @classmethod
    async def abulk_perform_async(
        cls, args_list: Iterable[Iterable[Any]], batch_size: int = 1000
    ) -> list[str]:
        """:meth:`bulk_perform_async` on redis.asyncio."""
        return await Setter(cls, {}).abulk_perform_async(args_list, batch_size)

    @classmethod
    def _app(cls) -> JobOwner:
        app: JobOwner | None = getattr(cls, "app", None)
        if app is None:
            raise ConfigurationError(
                f"{cls.__name__} is not registered on an App; use app.register({cls.__name__})"
            )
        return app


class Setter:
    """A job class with per-enqueue option overrides (checked when given to :meth:`set`).

    >>> Report.set(queue="low", timeout=dt.timedelta(minutes=5)).perform_async(7)  # doctest: +SKIP
    """

    def __init__(self, job_class: type[Job], options: Mapping[str, Any]) -> None:
        self.job_class = job_class
        self.options = dict(options)

    def set(self, **options: Any) -> Setter:
        checked = self.job_class._app().normalize_options(
            self.job_class.__name__, options, enqueue=True
        )
        return Setter(self.job_class, {**self.options, **checked})

    def perform_async(self, *args: Any, **kwargs: Any) -> EnqueueResult:
        refuse_keywords(self.job_class.__name__, "perform_async", kwargs)
        return self.job_class._app().client.enqueue(self.job_class, list(args), self.options)

    def perform_in(self, seconds: float | dt.timedelta, *args: Any, **kwargs: Any) -> EnqueueResult:
        refuse_keywords(self.job_class.__name__, "perform_in", kwargs)
        app = self.job_class._app()
        at = _in(app, seconds)
        return app.client.enqueue(self.job_class, list(args), self.options, at=at)

    def perform_at(self, at: float | dt.datetime, *args: Any, **kwargs: Any) -> EnqueueResult:
        refuse_keywords(self.job_class.__name__, "perform_at", kwargs)
        app = self.job_class._app()
        return app.client.enqueue(self.job_class, list(args), self.options, at=_at(at))

    def bulk_perform_async(
        self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000
    ) -> list[str]:
        """Enqueue many jobs, ``batch_size`` per round trip; returns the jids pushed."""
        return self.job_class._app().client.enqueue_bulk(
            self.job_class, _lists(args_list), self.options, batch_size
        )

    async def aperform_async(self, *args: Any, **kwargs: Any) -> EnqueueResult:
        refuse_keywords(self.job_class.__name__, "aperform_async", kwargs)
        client = self.job_class._app().client
        return await client.aenqueue(self.job_class, list(args), self.options)

    async def aperform_in(
        self, seconds: float | dt.timedelta, *args: Any, **kwargs: Any
    ) -> EnqueueResult:
        refuse_keywords(self.job_class.__name__, "aperform_in", kwargs)
        app = self.job_class._app()
        at = _in(app, seconds)
        return await app.client.aenqueue(self.job_class, list(args), self.options, at=at)

    async def aperform_at(
        self, at: float | dt.datetime, *args: Any, **kwargs: Any
    ) -> EnqueueResult:
        refuse_keywords(self.job_class.__name__, "aperform_at", kwargs)
        client = self.job_class._app().client
        return await client.aenqueue(self.job_class, list(args), self.options, at=_at(at))

    async def abulk_perform_async(
        self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000
    ) -> list[str]:
        """:meth:`bulk_perform_async` on redis.asyncio."""
        client = self.job_class._app().client
        return await client.aenqueue_bulk(
            self.job_class, _lists(args_list), self.options, batch_size
        )


def _in(app: JobOwner, delay: float | dt.timedelta) -> float:
    """Epoch seconds ``delay`` (seconds or a timedelta; 0 or less: now) from the app's clock."""
    if isinstance(delay, dt.timedelta):
        delay = delay.total_seconds()
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise EnqueueError(
            f"perform_in takes seconds (a number or a datetime.timedelta), got {delay!r}"
        )
    return app.clock.time() + float(delay)


def _at(at: float | dt.datetime) -> float:
    if isinstance(at, dt.datetime):
        if at.tzinfo is None:
            raise ConfigurationError(
                f"perform_at got the naive datetime {at.isoformat()}; give it a time zone"
            )
        return at.timestamp()
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise EnqueueError(f"perform_at takes epoch seconds or an aware datetime, got {at!r}")
    return float(at)


def _lists(args_list: Iterable[Iterable[Any]]) -> list[list[Any]]:
    if isinstance(args_list, str | bytes | Mapping):
        raise EnqueueError(
            f"bulk_perform_async takes a list of argument lists, e.g. [[1], [2]], got "
            f"{type(args_list).__name__}"
        )
    out = []
    for i, args in enumerate(args_list):
        if isinstance(args, str | bytes | Mapping) or not isinstance(args, Iterable):
            raise EnqueueError(
                f"bulk_perform_async item {i} is a {type(args).__name__}, not a list of "
                "arguments; wrap it: [[x] for x in items]"
            )
        out.append(list(args))
    return out


S = TypeVar("S")


class ServiceJob(Job, Generic[S]):
    """A job whose work lives in a service object (a bulk-operations service, an import
    pipeline, an automation engine). Each service registers its own subclasses, bound to
    itself with :meth:`bind`, so two apps in one process never share job state.

    >>> class Greeter:
    ...     def greet(self, name: str) -> None: ...
    >>> class GreetJob(ServiceJob[Greeter]):
    ...     def perform(self, name: str) -> None:
    ...         self.service.greet(name)
    >>> bound = GreetJob.bind(Greeter())
    >>> bound.__name__
    'GreetJob'
    """

    _service: ClassVar[object | None] = None
    #: The service keeps its records in the default store, so its jobs stay there whatever
    #: the routing rules say (a rule may still rename their queue).
    store: ClassVar[str | None] = DEFAULT_STORE

    @property
    def service(self) -> S:
        found = type(self)._service
        if found is None:
            raise ConfigurationError(
                f"{type(self).__name__} is not bound to a service; register "
                f"{type(self).__name__}.bind(service) instead of the class itself"
            )
        return cast(S, found)

    @classmethod
    def bind(cls, service: S) -> type[ServiceJob[S]]:
        """A subclass of this job class bound to ``service`` (register that one)."""
        return type(cls.__name__, (cls,), {"_service": service, "__module__": cls.__module__})


def resolve_options(
    job_class: type[Job],
    overrides: Mapping[str, Any],
    known: frozenset[str],
    checks: Mapping[str, OptionCheck] | None = None,
) -> dict[str, Any]:
    """Class attributes < decorator options, checked against the known option names and each
    option's check (the same checks ``.set()`` runs)."""
    name = job_class.__name__
    check_known(name, overrides, known)
    resolved: dict[str, Any] = {}
    for option in sorted(known - ENQUEUE_OPTIONS):
        default = CORE_OPTIONS.get(option)
        resolved[option] = overrides.get(option, getattr(job_class, option, default))
    return normalize_options(name, resolved, known, checks or {})


__all__ = [
    "CORE_OPTIONS",
    "PAYLOAD_OPTIONS",
    "EnqueueResult",
    "Enqueuer",
    "Job",
    "JobOwner",
    "ServiceJob",
    "Setter",
    "check_known",
    "resolve_options",
]
