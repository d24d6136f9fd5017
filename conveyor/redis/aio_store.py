"""The hot-path job operations on ``redis.asyncio``, for the asyncio worker: fetch (the same
``fetch.lua`` and atomic ``BLMOVE``) and finish (the same ``finish.lua``), so jobs move between
the same queue and working lists, with the same acknowledgement outcomes, as in the threaded
worker. The scripts are read from ``conveyor/redis/lua/`` by :func:`scripts.source`: one copy
of the Lua for both workers.

Everything off the hot path (heartbeat, recovery, requeue at shutdown, the scheduled poller)
stays on the synchronous :class:`~conveyor.redis.Store`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from conveyor.redis.connection import resolve_url
from conveyor.redis.keys import Keys
from conveyor.redis.scripts import source
from conveyor.redis.store import STATS_TTL, Outcome
from conveyor.settings import Settings


def aconnect(settings: Settings) -> aioredis.Redis:
    """An asyncio client for ``settings`` (the configured URL or the embedded server),
    decoding replies as UTF-8 strings; use it on one event loop only.

    >>> client = aconnect(Settings(redis_url="redis://localhost:6379/0"))   # doctest: +SKIP
    """
    url = resolve_url(settings)
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30, **tcp)


class AioStore:
    """``fetch``/``fetch_blocking``/``finish`` of :class:`~conveyor.redis.Store`, awaitable.

    >>> store = AioStore(aconnect(settings), Keys(settings.key_prefix))   # doctest: +SKIP
    >>> await store.fetch("host:1:ab", ["default"], 10)                   # doctest: +SKIP
    [('default', '{"class": ...}')]
    """

    def __init__(self, client: aioredis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self._scripts: dict[str, AsyncScript] = {}

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if script is None:  # one event loop: no lock needed
            script = self._scripts[name] = self.client.register_script(source(name))
        return await script(keys=keys, args=args)

    async def fetch(
        self, identity: str, queues: Sequence[str], count: int
    ) -> list[tuple[str, str]]:
        """Move up to ``count`` jobs from ``queues`` (in order) into the working list."""
        k = self.keys
        flat = await self._run(
            "fetch", [k.working(identity), *(k.queue(q) for q in queues)], [count]
        )
        return [(queues[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat), 2)]

    async def fetch_blocking(self, identity: str, queue: str, timeout: float) -> str | None:
        """Block up to ``timeout`` seconds for one job from ``queue`` (atomic BLMOVE)."""
        result = await self.client.blmove(
            self.keys.queue(queue),
            self.keys.working(identity),
            timeout,  # type: ignore[arg-type]  # Redis 6+ takes fractional seconds
            "RIGHT",
            "LEFT",
        )
        return None if result is None else str(result)

    async def finish(
        self,
        identity: str,
        outcomes: Iterable[Outcome],
        day: str,
        dead_max: int,
        dead_cutoff: float,
    ) -> int:
        """Acknowledge executed jobs and file retries/dead jobs atomically; count stats (the
        KEYS/ARGV layout is finish.lua's header)."""
        k = self.keys
        args: list[str | int | float] = [STATS_TTL, dead_max, dead_cutoff]
        for o in outcomes:
            args += (o.kind, o.raw, o.score, o.payload)
        keys = [
            k.working(identity),
            k.retry,
            k.dead,
            k.stat("processed"),
            k.stat_daily("processed", day),
            k.stat("failed"),
            k.stat_daily("failed", day),
        ]
        return int(await self._run("finish", keys, args))

    async def close(self) -> None:
        await self.client.aclose()
