"""The asyncio twin of :class:`~conveyor.redis.store.Store`: the same key names and Lua scripts
on a ``redis.asyncio`` client. Enqueue logic is shared with the sync side through plans
(:mod:`conveyor.redis.calls`), so nothing here knows what a job is.

A ``redis.asyncio`` connection belongs to the event loop that opened it, so :class:`LoopStores`
keeps one store per running loop (an app used from ``asyncio.run`` twice, as tests do, gets a
fresh client each time instead of one bound to a closed loop).

>>> stores = LoopStores(lambda: AsyncStore(connect_async(settings), Keys()))  # doctest: +SKIP
>>> store = stores.current()              # inside a coroutine               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from conveyor.redis.keys import Keys
from conveyor.redis.scripts import source


class AsyncScripts:
    """The Lua scripts bound to one asyncio client (EVALSHA, falling back to EVAL)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._scripts: dict[str, AsyncScript] = {}

    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._script(name)(keys=keys, args=args)

    async def run_and_wait(
        self, name: str, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """The script, then ``WAIT replicas timeout_ms``, in one round trip (as
        :meth:`conveyor.redis.scripts.Scripts.run_and_wait`)."""
        script = self._script(name)
        for attempt in range(2):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.wait(replicas, timeout_ms)
                result, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(result, NoScriptError) and attempt == 0:
                # An empty script cache (a new or restarted primary): the script did not run.
                await self._client.script_load(script.script)
                continue
            for reply in (result, confirmed):
                if isinstance(reply, Exception):
                    raise reply
            return result, int(confirmed)
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _script(self, name: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._client.register_script(source(name))
        return script


class AsyncStore:
    """An asyncio client, its key builder and its scripts."""

    def __init__(self, client: aioredis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.scripts = AsyncScripts(client)

    async def aclose(self) -> None:
        await self.client.aclose()


class LoopStores:
    """One :class:`AsyncStore` per running event loop, made by ``factory`` on first use."""

    def __init__(self, factory: Callable[[], AsyncStore]) -> None:
        self._factory = factory
        self._stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncStore] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def current(self) -> AsyncStore:
        """The store of the running loop (call it from a coroutine)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            store = self._stores.get(loop)
            if store is None:
                store = self._stores[loop] = self._factory()
        return store

    async def aclose(self) -> None:
        """Close the running loop's store (others close with their loops)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            store = self._stores.pop(loop, None)
        if store is not None:
            await store.aclose()
