"""Declaring jobs: subclass :class:`Job` (or decorate a function with ``app.job``) and register
it on an :class:`~conveyor.core.app.App`. Options are class attributes or decorator arguments."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, cast

from conveyor.clock import Clock
from conveyor.core.payload import Payload
from conveyor.errors import ConfigurationError, UnknownOptionError

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


class JobOwner(Protocol):
    """What a registered job class needs from its app (:class:`~conveyor.core.app.App`)."""

    @property
    def clock(self) -> Clock: ...

    @property
    def client(self) -> Enqueuer: ...


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
        """Override options for one enqueue: ``Job.set(queue="low").perform_async(1)``."""
        return Setter(cls, options)

    @classmethod
    def perform_async(cls, *args: Any) -> EnqueueResult:
        return Setter(cls, {}).perform_async(*args)

    @classmethod
    def perform_in(cls, seconds: float | dt.timedelta, *args: Any) -> EnqueueResult:
        return Setter(cls, {}).perform_in(seconds, *args)

    @classmethod
    def perform_at(cls, at: float | dt.datetime, *args: Any) -> EnqueueResult:
        return Setter(cls, {}).perform_at(at, *args)

    @classmethod
    def bulk_perform_async(
        cls, args_list: Iterable[Iterable[Any]], batch_size: int = 1000
    ) -> list[str]:
        return Setter(cls, {}).bulk_perform_async(args_list, batch_size)

    @classmethod
    def _app(cls) -> JobOwner:
        app: JobOwner | None = getattr(cls, "app", None)
        if app is None:
            raise ConfigurationError(
                f"{cls.__name__} is not registered on an App; use app.register({cls.__name__})"
            )
        return app


class Setter:
    """A job class with per-enqueue option overrides."""

    def __init__(self, job_class: type[Job], options: Mapping[str, Any]) -> None:
        self.job_class = job_class
        self.options = dict(options)

    def set(self, **options: Any) -> Setter:
        return Setter(self.job_class, {**self.options, **options})

    def perform_async(self, *args: Any) -> EnqueueResult:
        return self.job_class._app().client.enqueue(self.job_class, list(args), self.options)

    def perform_in(self, seconds: float | dt.timedelta, *args: Any) -> EnqueueResult:
        if isinstance(seconds, dt.timedelta):
            seconds = seconds.total_seconds()
        app = self.job_class._app()
        return app.client.enqueue(
            self.job_class, list(args), self.options, at=app.clock.time() + float(seconds)
        )

    def perform_at(self, at: float | dt.datetime, *args: Any) -> EnqueueResult:
        if isinstance(at, dt.datetime):
            if at.tzinfo is None:
                raise ConfigurationError(
                    f"perform_at got the naive datetime {at.isoformat()}; give it a time zone"
                )
            at = at.timestamp()
        return self.job_class._app().client.enqueue(self.job_class, list(args), self.options, at=at)

    def bulk_perform_async(
        self, args_list: Iterable[Iterable[Any]], batch_size: int = 1000
    ) -> list[str]:
        """Enqueue many jobs, ``batch_size`` per round trip; returns the jids pushed."""
        return self.job_class._app().client.enqueue_bulk(
            self.job_class, [list(a) for a in args_list], self.options, batch_size
        )


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


def check_known(name: str, options: Mapping[str, Any], known: frozenset[str]) -> None:
    """Refuse options that neither the core nor any installed middleware declares.

    >>> check_known("Report", {"queue": "low"}, frozenset({"queue"}))
    """
    unknown = sorted(set(options) - known)
    if unknown:
        raise UnknownOptionError(
            f"{name}: unknown job option(s) {', '.join(unknown)}; known options: "
            f"{', '.join(sorted(known))} (middleware declare their own options)"
        )


def resolve_options(
    job_class: type[Job], overrides: Mapping[str, Any], known: frozenset[str]
) -> dict[str, Any]:
    """Class attributes < decorator options, checked against the known option names."""
    check_known(job_class.__name__, overrides, known)
    resolved: dict[str, Any] = {}
    for option in sorted(known):
        default = CORE_OPTIONS.get(option)
        resolved[option] = overrides.get(option, getattr(job_class, option, default))
    _validate(job_class, resolved)
    return resolved


def _validate(job_class: type[Job], options: Mapping[str, Any]) -> None:
    name = job_class.__name__
    retry = options["retry"]
    if not isinstance(retry, bool | int) or (not isinstance(retry, bool) and retry < 0):
        raise ConfigurationError(f"{name}: retry={retry!r} must be True, False or a count >= 0")
    if not isinstance(options["queue"], str) or not options["queue"]:
        raise ConfigurationError(f"{name}: queue={options['queue']!r} must be a non-empty string")
    timeout = options["timeout"]
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigurationError(f"{name}: timeout={timeout!r} must be a number of seconds > 0")
    limit = options["max_retries_after_interruption"]
    if limit is not None and (not isinstance(limit, int) or limit < -1):
        raise ConfigurationError(
            f"{name}: max_retries_after_interruption={limit!r} must be an int >= -1 (-1 disables)"
        )
