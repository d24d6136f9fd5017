"""The application object: job registry, middleware chains, settings and the Redis store.

Creating an :class:`App` does no I/O; Redis is connected on first use.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.core._protocols import DeathHandler, InterruptedHandler, PeriodicTask
from conveyor.core.client import Client
from conveyor.core.extensions import Extensions
from conveyor.core.job import CORE_OPTIONS, Job, check_known, resolve_options
from conveyor.core.middleware import Chain, ClientMiddleware, ServerMiddleware
from conveyor.core.options import ENQUEUE_OPTIONS, OptionCheck, normalize_options
from conveyor.errors import ConfigurationError
from conveyor.redis import Store
from conveyor.redis.aio import AsyncStore
from conveyor.redis.aio_store import own_client
from conveyor.redis.stores import Stores
from conveyor.settings import Settings

J = TypeVar("J", bound=type[Job])
F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:  # types only; the testing modes are loaded on first use, never with the app
    from redis import Redis as RedisClient
    from redis.asyncio import Redis as AsyncRedisClient

    from conveyor.core.testing import Testing

__all__ = ["App", "DeathHandler", "FunctionJob", "InterruptedHandler", "PeriodicTask"]


class App:
    """Where jobs are declared and from which they are enqueued and run.

    >>> app = App(Settings(redis_url="redis://localhost:6379/0"))
    >>> @app.job(queue="mail")
    ... def send_welcome(user_id: int) -> None: ...
    >>> send_welcome.wire_name()
    'send_welcome'
    """

    def __init__(self, settings: Settings | None = None, *, clock: Clock = SYSTEM_CLOCK) -> None:
        self._settings = settings
        self.clock = clock
        self.registry: dict[str, type[Job]] = {}
        self.client_middleware: Chain[ClientMiddleware] = Chain()
        self.server_middleware: Chain[ServerMiddleware] = Chain()
        self.death_handlers: list[DeathHandler] = []
        self.interrupted_handlers: list[InterruptedHandler] = []
        self.periodic_tasks: list[PeriodicTask] = []
        #: Queue gates: while a gate returns False its queue is left out of fetching.
        self.queue_gates: dict[str, Callable[[], bool]] = {}
        #: Per-app state of features (flags cache, cron entries...), under typed keys.
        self.extensions = Extensions()
        self.client = Client(self)
        self._testing: Testing | None = None
        self._stores: Stores | None = None
        self._lock = threading.Lock()

    # -- configuration --------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load()
        return self._settings

    def configure(self, settings: Settings) -> None:
        """Replace the settings (before first use of Redis)."""
        if self._stores is not None:
            raise ConfigurationError("configure() must be called before the app touches Redis")
        self._settings = settings

    @property
    def testing(self) -> Testing:
        """The testing modes (``with app.testing.fake(): ...``), loaded on first use."""
        if self._testing is None:
            from conveyor.core.testing import Testing  # the engine never needs it to run

            self._testing = Testing(self)
        return self._testing

    @property
    def stores(self) -> Stores:
        """Every Redis store of the settings by name (``default`` and ``Settings.stores``)."""
        if self._stores is None:
            with self._lock:
                if self._stores is None:
                    self._stores = Stores(self.settings)
        return self._stores

    @property
    def store(self) -> Store:
        """The store this process serves (``Settings.store``; ``default`` unless set)."""
        return self.stores.get(self.settings.store)

    def redis(self) -> RedisClient:
        """A Redis client for a job's own calls, on the store this process serves: this
        thread's own connection, as ``Sidekiq.redis`` hands a Ruby job one of Sidekiq's. In
        threads mode it costs far less CPU per call than a client shared by the worker's
        threads (docs/jobs.md). Not for ``async def`` jobs (it blocks the loop): use
        :meth:`aredis` there.

        >>> app.redis().incr("visits")                 # doctest: +SKIP
        """
        return self.store.thread_client()

    def aredis(self) -> AsyncRedisClient:
        """The ``redis.asyncio`` twin of :meth:`redis`, for an ``async def`` job's own calls:
        in an asyncio worker, its slot's own connection, kept across the slot's jobs (it
        costs less CPU per call than a client shared through a pool, docs/jobs.md);
        elsewhere (a threads worker, a script) the running loop's client of the store.

        >>> await app.aredis().incr("visits")          # doctest: +SKIP
        """
        own = own_client()
        return own if own is not None else self.async_store().client

    def async_store(self) -> AsyncStore:
        """The ``redis.asyncio`` twin of :attr:`store` for the running event loop (made on
        first use there)."""
        return self.stores.get_async(self.settings.store)

    def close(self) -> None:
        if self._stores is not None:
            self._stores.close()
            self._stores = None

    async def aclose(self) -> None:
        """Close the running loop's asyncio connections (and the sync ones)."""
        if self._stores is not None:
            await self._stores.aclose()
        self.close()

    def known_options(self) -> frozenset[str]:
        return (
            frozenset(CORE_OPTIONS)
            | self.client_middleware.declared_options()
            | self.server_middleware.declared_options()
        )

    def check_options(self, name: str, options: Mapping[str, Any]) -> None:
        """Raise :class:`~conveyor.errors.UnknownOptionError` for options nobody declares."""
        check_known(name, options, self.known_options())

    def option_checks(self) -> dict[str, OptionCheck]:
        """The middleware's checks of the options they declare."""
        checks: dict[str, OptionCheck] = {}
        for chain in (self.client_middleware, self.server_middleware):
            for middleware in chain:
                for option in middleware.options:
                    checks.setdefault(option, middleware.check_option)
        return checks

    def normalize_options(
        self, name: str, options: Mapping[str, Any], *, enqueue: bool = False
    ) -> dict[str, Any]:
        """``options`` checked as a declaration checks them (``enqueue``: as ``.set()`` does,
        which also takes per-job options such as ``wal_locations``); returns them normalized.

        >>> app.normalize_options("Report", {"queue": "low"}, enqueue=True)
        {'queue': 'low'}
        """
        known = self.known_options() | (ENQUEUE_OPTIONS if enqueue else frozenset())
        return normalize_options(name, options, known, self.option_checks())

    # -- declaring jobs -------------------------------------------------------------------------
    def register(self, job_class: J, **options: Any) -> J:
        """Register a :class:`Job` subclass; ``options`` override its class attributes."""
        if not (isinstance(job_class, type) and issubclass(job_class, Job)):
            raise ConfigurationError(f"{job_class!r} is not a Job subclass")
        resolved = resolve_options(job_class, options, self.known_options(), self.option_checks())
        job_class.conveyor_options = resolved
        job_class.app = self
        names = [job_class.wire_name(), *resolved.get("aliases", ())]
        for name in names:
            existing = self.registry.get(name)
            if existing is not None and existing is not job_class:
                raise ConfigurationError(
                    f"job name {name!r} is already taken by {existing.__module__}."
                    f"{existing.__qualname__}; give one of them another name=..."
                )
        for name in names:
            self.registry[name] = job_class
        return job_class

    @overload
    def job(self, target: J, /) -> J: ...
    @overload
    def job(self, target: F, /) -> type[Job]: ...
    @overload
    def job(self, target: None = None, /, **options: Any) -> Callable[[Any], Any]: ...

    def job(self, target: Any = None, /, **options: Any) -> Any:
        """Decorator declaring a job class or a function (sync or ``async def``) as a job.

        A decorated function becomes a :class:`Job` subclass named after the function; calling
        it still runs the function directly, and it gains ``perform_async`` and friends.
        """

        def decorate(obj: Any) -> Any:
            if isinstance(obj, type):
                return self.register(obj, **options)
            if callable(obj):
                return self.register(_function_job(obj), **options)
            raise ConfigurationError(f"@app.job cannot decorate {obj!r}")

        return decorate(target) if target is not None else decorate

    def add_periodic(self, name: str, interval: float, run: Callable[[], object]) -> None:
        """Have every worker process call ``run`` about every ``interval`` seconds."""
        if interval <= 0:
            raise ConfigurationError(
                f"periodic task {name!r}: interval must be > 0, got {interval}"
            )
        self.periodic_tasks = [t for t in self.periodic_tasks if t.name != name]
        self.periodic_tasks.append(PeriodicTask(name, interval, run))

    def gate_queue(self, queue: str, is_open: Callable[[], bool]) -> None:
        """Have workers fetch from ``queue`` only while ``is_open()`` is true (a CPU throttle,
        a maintenance switch). Jobs already fetched still run; the queue's jobs wait in Redis
        for another process whose gate is open. ``is_open`` is called before every fetch, so
        it must be cheap and must not raise."""
        self.queue_gates[queue] = is_open

    def find(self, name: str) -> type[Job] | None:
        return self.registry.get(name)

    # -- enqueueing by name ---------------------------------------------------------------------
    def enqueue(self, name: str, *args: Any, at: float | None = None, **options: Any) -> Any:
        """Enqueue by wire name, e.g. for a class only a Ruby process knows."""
        return self.client.enqueue(name, list(args), options, at=at)

    async def aenqueue(self, name: str, *args: Any, at: float | None = None, **options: Any) -> Any:
        """:meth:`enqueue` from asyncio: ``await app.aenqueue("HardWorker", "bob", 5)``."""
        return await self.client.aenqueue(name, list(args), options, at=at)


def app_of(job_class: type[Job]) -> App:
    """The :class:`App` a job class is registered on.

    >>> app_of(send_welcome) is app                       # doctest: +SKIP
    True
    """
    app = job_class._app()
    if not isinstance(app, App):
        raise ConfigurationError(
            f"{job_class.__name__} is registered on {app!r}, not on a conveyor App"
        )
    return app


def _function_job(func: Callable[..., Any]) -> type[Job]:

    is_async = asyncio.iscoroutinefunction(func)
    if is_async:

        async def perform_async_fn(self: Job, *args: Any) -> Any:
            return await func(*args)

        perform: Any = perform_async_fn
    else:

        def perform_sync(self: Job, *args: Any) -> Any:
            return func(*args)

        perform = perform_sync
    functools.update_wrapper(perform, func)
    namespace = {
        "perform": perform,
        "__module__": func.__module__,
        "__doc__": func.__doc__,
        "__qualname__": func.__qualname__,
        "__signature__": inspect.signature(func),
        "func": staticmethod(func),
    }
    cls = _FunctionJobMeta(func.__name__, (FunctionJob,), namespace)
    return cast(type[Job], cls)


class _FunctionJobMeta(type):
    """Calling a function job runs the function, as if it were not decorated."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls.func(*args, **kwargs)  # type: ignore[attr-defined]


class FunctionJob(Job, metaclass=_FunctionJobMeta):
    """A job made from a plain function by ``@app.job``; ``func`` is the function."""

    @classmethod
    def instantiate(cls) -> Job:
        return object.__new__(cls)
