"""Running ``perform`` itself: sync jobs in the calling thread with an optional timeout, async
jobs on one event loop per process (SPEC CORE-4)."""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from conveyor.errors import ConfigurationError, JobTimeoutError

log = logging.getLogger("conveyor.worker")

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the event loops jobs run on: ``uvloop`` (a faster loop, about 10 % less CPU
    per job on the I/O workload), ``asyncio``, or ``auto``: uvloop when it is installed.

    >>> loop_factory("asyncio") is asyncio.new_event_loop
    True
    """
    if kind == "asyncio":
        return asyncio.new_event_loop
    try:
        import uvloop
    except ImportError:
        if kind == "uvloop":
            raise ConfigurationError(
                "event_loop='uvloop' but uvloop is not installed: pip install uvloop, "
                "or set event_loop to auto or asyncio"
            ) from None
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func)


def run_sync(func: Callable[..., Any], args: list[Any], timeout: float | None) -> Any:
    """Call ``func(*args)``; past ``timeout`` seconds raise :class:`JobTimeoutError` inside it.

    Python cannot kill a thread: the error is raised the next time the thread runs Python
    code, so a job stuck inside one C call stops only when that call returns.
    """
    if timeout is None:
        return func(*args)
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                _set_async_exc(tid, ctypes.py_object(JobTimeoutError))

    timer = threading.Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    try:
        try:
            return func(*args)
        finally:
            with lock:
                state["done"] = True
            timer.cancel()
            if state["fired"]:
                _set_async_exc(tid, ctypes.py_object())  # clear it if not delivered yet
    except JobTimeoutError:
        raise JobTimeoutError(f"job ran longer than its timeout of {timeout}s") from None


class AsyncRunner:
    """One event loop thread per process for ``async def perform`` jobs."""

    def __init__(
        self,
        event_loop: str = "auto",
        *,
        on_close: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self._new_loop = loop_factory(event_loop)
        #: Run on the loop before it closes: the app's clients made on it (app.aredis(),
        #: app.async_store()) close their connections, which a loop must not outlive.
        self._on_close = on_close
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = self._new_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="conveyor-asyncio", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        """Run ``coro`` on the loop and wait for it from the calling worker thread."""
        loop = self._ensure()

        async def guarded() -> Any:
            if timeout is None:
                return await coro
            try:
                return await asyncio.wait_for(coro, timeout)
            except TimeoutError:
                raise JobTimeoutError(f"job ran longer than its timeout of {timeout}s") from None

        return asyncio.run_coroutine_threadsafe(guarded(), loop).result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            if self._on_close is not None:
                try:
                    asyncio.run_coroutine_threadsafe(self._on_close(), loop).result(timeout=5)
                except Exception as exc:  # the loop still stops; its connections drop with it
                    log.warning("closing the job loop's Redis clients failed: %s", exc)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                loop.close()
