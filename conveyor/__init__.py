"""Conveyor: reliable background jobs on Redis, wire-compatible with Sidekiq.

>>> from conveyor import App, Job
>>> app = App()
>>> @app.job(queue="default")
... def add(a: int, b: int) -> int:
...     return a + b
"""

from conveyor import _moved
from conveyor.clock import Clock, FakeClock, SystemClock
from conveyor.core.app import FunctionJob
from conveyor.core.job import EnqueueResult, Job
from conveyor.core.middleware import (
    ClientMiddleware,
    EnqueueContext,
    JobContext,
    Middleware,
    ServerMiddleware,
)
from conveyor.core.worker import Worker
from conveyor.errors import (
    ConfigurationError,
    ConveyorError,
    EmbeddedRedisError,
    EnqueueError,
    JobTimeoutError,
    NotDurableError,
    NotFoundError,
    PayloadError,
    SerializationError,
    UnknownJobClassError,
    UnknownOptionError,
)
from conveyor.features import App
from conveyor.settings import Settings

__version__ = "0.1.0"

_moved.install()

__all__ = [
    "App",
    "ClientMiddleware",
    "Clock",
    "ConfigurationError",
    "ConveyorError",
    "EmbeddedRedisError",
    "EnqueueContext",
    "EnqueueError",
    "EnqueueResult",
    "FakeClock",
    "FunctionJob",
    "Job",
    "JobContext",
    "JobTimeoutError",
    "Middleware",
    "NotDurableError",
    "NotFoundError",
    "PayloadError",
    "SerializationError",
    "ServerMiddleware",
    "Settings",
    "SystemClock",
    "UnknownJobClassError",
    "UnknownOptionError",
    "Worker",
    "__version__",
]
