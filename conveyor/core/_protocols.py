"""What the core's parts need from the app that owns them.

:class:`conveyor.core.app.App` is the one implementation. The parts below it (middleware
contexts, the client, the processor, retries, recovery, the worker, the testing modes) depend on
these Protocols instead of the class, so the core has no import cycle: ``app`` imports its
parts, never the other way round. Each part that needs more (a middleware chain) extends
:class:`AppLike` in its own module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from conveyor.clock import Clock
from conveyor.core.extensions import Extensions
from conveyor.core.job import Enqueuer, Job
from conveyor.core.payload import Payload
from conveyor.redis import Store
from conveyor.redis.stores import Stores
from conveyor.settings import Settings

#: Called with (payload, exception) when a job goes to the dead set.
DeathHandler = Callable[[Payload, BaseException], None]
#: Called with the payload when a job is parked in the interrupted set.
InterruptedHandler = Callable[[Payload], None]


@dataclass(frozen=True)
class PeriodicTask:
    """Work every worker process does every ``interval`` seconds (cron ticks, resuming
    deferred jobs...). Tasks that must run once per cluster take a lock themselves."""

    name: str
    interval: float
    run: Callable[[], object]


class EnqueueClient(Enqueuer, Protocol):
    """The app's client as middleware and features see it."""

    @property
    def live(self) -> bool:
        """False while a testing mode (inline, fake) captures pushes instead of Redis."""
        ...


class AppLike(Protocol):
    """The app as the core's parts and middleware contexts see it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def store(self) -> Store:
        """The store this process serves (fetch, retries, schedule, recovery, cron)."""
        ...

    @property
    def stores(self) -> Stores:
        """Every store by name; an enqueue goes to the one its job is routed to."""
        ...

    @property
    def clock(self) -> Clock: ...

    @property
    def client(self) -> EnqueueClient: ...

    @property
    def registry(self) -> Mapping[str, type[Job]]: ...

    @property
    def extensions(self) -> Extensions: ...

    @property
    def death_handlers(self) -> list[DeathHandler]: ...

    @property
    def interrupted_handlers(self) -> list[InterruptedHandler]: ...

    @property
    def periodic_tasks(self) -> list[PeriodicTask]: ...

    @property
    def queue_gates(self) -> Mapping[str, Callable[[], bool]]: ...
