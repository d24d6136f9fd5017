"""Running jobs for the asyncio worker (:mod:`conveyor.core.aio_worker`): ``async def`` jobs on
the worker's event loop with the same server middleware, retries and outcomes as the threaded
processor, and sync jobs in a small thread pool whose results come back to the loop."""

from __future__ import annotations

import asyncio
import logging
import queue as queue_mod
import threading
from collections.abc import Callable
from typing import Any

from conveyor.core.job import Job
from conveyor.core.middleware import FetchedJob, JobContext
from conveyor.core.payload import Payload
from conveyor.core.processor import Processor
from conveyor.errors import JobTimeoutError
from conveyor.logs import job_context
from conveyor.redis import Outcome

log = logging.getLogger("conveyor.processor")


class AioProcessor(Processor):
    """The :class:`Processor` with an awaitable run for ``async def`` jobs (server middleware
    hooks, which are plain functions, run on the loop around the awaited ``perform``)."""

    async def process_async(self, unit: FetchedJob) -> Outcome:
        """Run one fetched ``async def`` job on the running loop and say how it ended."""
        job, job_class = unit.job, unit.job_class
        assert job is not None and job_class is not None  # callers route the others to process
        instance: Job | None = None
        with job_context(job, unit.queue):
            try:
                instance = job_class.instantiate()
                instance.job = job
                if (
                    not self.chain_for(job_class)
                    and job_class.conveyor_options.get("timeout") is None
                ):
                    await instance.perform(*job["args"])  # the plain job: no frames around it
                    return Outcome("ok", unit.raw)
                ctx = await self.run_async(job_class, instance, job, unit)
                return Outcome("gone" if ctx is not None and ctx.handed_off else "ok", unit.raw)
            except Exception as exc:
                unit.failed = True
                return self._failed(unit.raw, unit.queue, exc, instance)

    async def run_async(
        self, job_class: type[Job], instance: Job, job: Payload, unit: FetchedJob
    ) -> JobContext | None:
        """Server middleware around the awaited ``perform``; raises what ``perform`` raised."""
        chain = self.chain_for(job_class)
        if not chain:
            await _perform(job_class, instance, job)
            return None
        ctx = JobContext(self.app, job_class, instance, job, unit.queue, unit.raw, self.identity)
        ctx.state = unit.state
        ran = 0
        error: BaseException | None = None
        try:
            for middleware in chain:
                ran += 1
                middleware.before_perform(ctx)
                if ctx.skipped is not None:
                    break
            if ctx.skipped is None:
                await _perform(job_class, instance, job)
        except BaseException as exc:
            error = exc
            raise
        finally:
            for middleware in reversed(chain[:ran]):
                middleware.after_perform(ctx, error)
        return ctx


async def _perform(job_class: type[Job], instance: Job, job: Payload) -> None:
    timeout = job_class.conveyor_options.get("timeout")
    if timeout is None:
        await instance.perform(*job["args"])
        return
    try:
        async with asyncio.timeout(timeout) as scope:
            await instance.perform(*job["args"])
    except TimeoutError:
        if scope.expired():  # not a TimeoutError the job raised itself
            raise JobTimeoutError(f"job ran longer than its timeout of {timeout}s") from None
        raise


class ThreadPool:
    """Daemon threads running sync jobs for the loop (daemon, so a job still stuck past the
    shutdown deadline, already requeued, cannot keep the process alive)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self._size = size
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._tasks: queue_mod.SimpleQueue[Any] = queue_mod.SimpleQueue()

    def run(self, func: Callable[[FetchedJob], Outcome], unit: FetchedJob) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(target=self._work, name="conveyor-sync", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._tasks.put((future, func, unit))
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._tasks.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                return
            future, func, unit = item
            try:
                result = func(unit)
            except BaseException as exc:  # delivered to the awaiting slot
                self._loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                self._loop.call_soon_threadsafe(_settle, future, result, None)

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def ready(outcome: Outcome) -> Outcome:
    return outcome
