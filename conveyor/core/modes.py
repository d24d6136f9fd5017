"""Which worker a process runs (``Settings.worker_mode``, ``conveyor worker --mode``, see
docs/concurrency-model.md): threads (:class:`~conveyor.core.worker.Worker`), asyncio
(:class:`~conveyor.core.aio_worker.AioWorker`), or ``auto``, asyncio exactly when every job
class the app registered is ``async def``."""

from __future__ import annotations

from conveyor.core.aio_worker import AioWorker
from conveyor.core.execution import is_async
from conveyor.core.processor import ProcessorHost
from conveyor.core.worker import Worker
from conveyor.errors import ConfigurationError

MODES = ("auto", "threads", "asyncio")


def resolved_mode(app: ProcessorHost) -> str:
    """The worker mode ``app.settings.worker_mode`` means for this app: ``auto`` is asyncio when
    the app registered job classes and every one is ``async def`` (they then run on the loop
    with no thread hop), else threads.

    >>> resolved_mode(app)                         # doctest: +SKIP
    'asyncio'
    """
    mode = app.settings.worker_mode
    if mode != "auto":
        return mode
    classes = list(app.registry.values())
    if classes and all(is_async(c.perform) for c in classes):
        return "asyncio"
    return "threads"


def create_worker(app: ProcessorHost, *, burst: bool = False) -> Worker | AioWorker:
    """The worker for ``app.settings.worker_mode``: threads (:class:`Worker`), asyncio, or
    for ``auto`` whichever :func:`resolved_mode` picks (logged).

    >>> create_worker(app).run()                  # doctest: +SKIP
    """
    mode = resolved_mode(app)
    worker: Worker | AioWorker
    if mode == "asyncio":
        worker = AioWorker(app, burst=burst)
    elif mode == "threads":
        worker = Worker(app, burst=burst)
    else:
        raise ConfigurationError(f"worker_mode must be one of {', '.join(MODES)}, got {mode!r}")
    if app.settings.worker_mode == "auto":  # said in the worker's start line
        why = (
            "every job class is async def" if mode == "asyncio" else "a job class is not async def"
        )
        worker.mode_note = f" (worker mode auto: {why})"
    return worker


__all__ = ["MODES", "create_worker", "resolved_mode"]
