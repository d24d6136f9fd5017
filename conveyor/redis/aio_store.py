"""The hot-path job operations on ``redis.asyncio``, for the asyncio worker: fetch (the same
``fetch.lua`` and atomic ``BLMOVE``) and finish (the same ``finish.lua``), so jobs move between
the same queue and working lists, with the same acknowledgement outcomes, as in the threaded
worker. The scripts are read from ``conveyor/redis/lua/`` by :func:`scripts.source`: one copy
of the Lua for both workers.

Everything off the hot path (heartbeat, recovery, requeue at shutdown, the scheduled poller)
stays on the synchronous :class:`~conveyor.redis.Store`.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Sequence
from contextvars import ContextVar
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError

from conveyor.redis.keys import Keys
from conveyor.redis.scripts import ScriptCall, main_reply, source
from conveyor.redis.store import Outcome, Trimmed, decode_raw, fetch_spec, fetched, finish_spec


class AioStore:
    """``fetch``/``fetch_blocking``/``finish`` of :class:`~conveyor.redis.Store`, awaitable.

    The fetch calls and the finish calls each keep one connection of the client's pool for
    the store's life (they run concurrently, each in one task), which spares every call the
    pool's checkout and retry wrapper.

    >>> store = AioStore(connect_async(settings), Keys(settings.key_prefix))   # doctest: +SKIP
    >>> await store.fetch("host:1:ab", ["default"], 10)                   # doctest: +SKIP
    [('default', '{"class": ...}')]
    """

    def __init__(self, client: aioredis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._shas: dict[str, str] = {}
        self._conns: dict[str, AbstractConnection] = {}

    async def _call(self, lane: str, *command: Any, raw: bool = False) -> Any:
        """One command on ``lane``'s own connection, made on first use. On an error or a
        cancellation mid-call redis-py drops the connection (a reply left half-read is never
        taken for the next one) and the next call reconnects (tests/redis/test_aio_store.py)."""
        conn = await self._conn(lane)
        await conn.send_command(*command)
        # Payloads are read as bytes and decoded by decode_raw, as the sync store does: a
        # payload that is not UTF-8 must reach the quarantine, not break the fetch.
        return await conn.read_response(disable_decoding=raw)

    async def _conn(self, lane: str) -> AbstractConnection:
        conn = self._conns.get(lane)
        if conn is None:
            pool = self.client.connection_pool
            conn = self._conns[lane] = await pool.get_connection()  # type: ignore[no-untyped-call]
        return conn

    def _sha(self, name: str) -> str:
        sha = self._shas.get(name)
        if sha is None:  # one event loop: no lock needed
            sha = self._shas[name] = self.client.register_script(source(name)).sha
        return sha

    async def _run(
        self, lane: str, name: str, keys: list[str], args: list[Any], *, raw: bool = False
    ) -> Any:
        sha = self._sha(name)
        try:
            return await self._call(lane, "EVALSHA", sha, len(keys), *keys, *args, raw=raw)
        except NoScriptError:  # a restarted or failed-over server: load it, once
            await self._call(lane, "SCRIPT", "LOAD", source(name))
            return await self._call(lane, "EVALSHA", sha, len(keys), *keys, *args, raw=raw)

    async def fetch(
        self, identity: str, queues: Sequence[str], count: int
    ) -> list[tuple[str, str]]:
        """Move up to ``count`` jobs from ``queues`` (in order) into the working list, and
        register the process (as :meth:`conveyor.redis.store.Store.fetch`)."""
        keys, args = fetch_spec(self.keys, identity, queues, count)
        return fetched(queues, await self._run("fetch", "fetch", keys, list(args), raw=True))

    async def fetch_blocking(self, identity: str, queue: str, timeout: float) -> str | None:
        """Block up to ``timeout`` seconds for one job from ``queue`` (atomic BLMOVE), and
        register the process, both sent at once (as :meth:`conveyor.redis.store.Store.
        fetch_blocking`)."""
        k = self.keys
        conn = await self._conn("fetch")
        blmove = ("BLMOVE", k.queue(queue), k.working(identity), "RIGHT", "LEFT", timeout)
        register = ("SADD", k.working_registry, identity)
        await conn.send_packed_command(conn.pack_commands([blmove, register]))
        result = await conn.read_response(disable_decoding=True)
        await conn.read_response()
        return None if result is None else decode_raw(result)

    async def finish(
        self,
        identity: str,
        outcomes: Iterable[Outcome],
        day: str,
        dead_max: int,
        dead_cutoff: float,
        *,
        boundary: str | None = None,
        riders: Sequence[ScriptCall] = (),
    ) -> tuple[int, Trimmed | None]:
        """Acknowledge executed jobs and file retries/dead jobs atomically; count stats, with
        ``riders`` just before in the same round trip (as
        :meth:`conveyor.redis.store.Store.finish`)."""
        keys, args = finish_spec(
            self.keys,
            identity,
            outcomes,
            day=day,
            dead_max=dead_max,
            dead_cutoff=dead_cutoff,
            boundary=boundary,
        )
        if not riders:
            reply = await self._run("finish", "finish", keys, list(args))
            return int(reply[0]), Trimmed.from_reply("dead", reply, 1)
        main = ScriptCall("finish", keys, list(args))
        calls = [*riders, main]
        conn = await self._conn("finish")
        await conn.send_packed_command(
            conn.pack_commands([c.command(self._sha(c.name)) for c in calls])
        )
        replies: list[Any] = []
        for _ in calls:  # every reply is read, so the connection stays in step
            try:
                replies.append(await conn.read_response())
            except aioredis.ResponseError as exc:
                replies.append(exc)
        for i, call in enumerate(calls):
            if isinstance(replies[i], NoScriptError):  # it did not run: load it, run it alone
                try:
                    replies[i] = await self._run("finish", call.name, call.keys, call.args)
                except aioredis.RedisError as exc:
                    replies[i] = exc
        result = main_reply(calls, replies)
        return int(result[0]), Trimmed.from_reply("dead", result, 1)

    async def close(self) -> None:
        """Close the client and every connection it made (the lanes' included)."""
        await self.client.aclose()


class OwnClient:
    """A ``redis.asyncio`` client on one connection of ``pool``, made on first use and kept for
    the life of the task holding it (an asyncio worker's slot): the asyncio twin of
    :meth:`conveyor.redis.store.Store.thread_client`. Each call then skips the pool's checkout,
    its lock and its event dispatch (about 8 µs of CPU per call, docs/jobs.md). Tasks that
    share it (a job's own ``gather``) take turns on its connection."""

    def __init__(self, pool: aioredis.ConnectionPool) -> None:
        self._pool = pool
        self._client: aioredis.Redis | None = None

    def get(self) -> aioredis.Redis:
        if self._client is None:
            self._client = aioredis.Redis(connection_pool=self._pool, single_connection_client=True)
        return self._client

    async def aclose(self) -> None:
        """Give its connection back to the pool."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


#: The running task's own client (:func:`holding_own_client`).
_OWN: ContextVar[OwnClient | None] = ContextVar("conveyor_own_client", default=None)


async def holding_own_client(
    pool: aioredis.ConnectionPool, work: Coroutine[Any, Any, None]
) -> None:
    """Await ``work`` with an :class:`OwnClient` of ``pool`` for it and every job it awaits
    (:func:`own_client`); its connection goes back to the pool when ``work`` ends."""
    own = OwnClient(pool)
    token = _OWN.set(own)
    try:
        await work
    finally:
        _OWN.reset(token)
        await own.aclose()


def own_client() -> aioredis.Redis | None:
    """The running task's own client, if :func:`holding_own_client` gave it one."""
    own = _OWN.get()
    return None if own is None else own.get()
