"""The data API's common reads from asyncio (queue sizes, stats, a job by jid), on the app's
``redis.asyncio`` client, returning the sync API's records (:class:`~conveyor.api.Stats`,
:class:`~conveyor.api.JobRecord`), so an ASGI app can show them without blocking its loop.

>>> api = AsyncApi(app)                                   # doctest: +SKIP
>>> (await api.stats()).enqueued                          # doctest: +SKIP
12
>>> await api.queue_sizes()                               # doctest: +SKIP
{'default': 12}
>>> (await api.find_job(jid)).place                       # doctest: +SKIP
'retry'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from conveyor.api import Stats
from conveyor.api._records import JobRecord
from conveyor.redis.keys import glob_escape

if TYPE_CHECKING:
    from conveyor.core.app import App
    from conveyor.redis.aio import AsyncStore

Place = Literal["queue", "schedule", "retry", "dead", "interrupted"]
_SETS: tuple[Place, ...] = ("schedule", "retry", "dead", "interrupted")
#: Entries read per round trip while looking for a jid.
PAGE = 500


@dataclass(frozen=True)
class FoundJob:
    """Where :meth:`AsyncApi.find_job` found a job: ``place`` and, for a queue, its name."""

    place: Place
    queue: str | None
    job: JobRecord


class AsyncApi:
    """Read-only data API for asyncio code. Writes (retry, kill, delete) stay in the sync
    :class:`~conveyor.api.Api`: they are admin actions, not request paths."""

    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def _store(self) -> AsyncStore:
        return self.app.async_store()

    async def queue_names(self) -> list[str]:
        """Names in the ``queues`` set, sorted. Example: ``await api.queue_names()``."""
        store = self._store
        return sorted([str(n) async for n in store.client.sscan_iter(store.keys.queues)])

    async def queue_sizes(self) -> dict[str, int]:
        """Jobs waiting per queue, largest first. Example: ``(await api.queue_sizes())["mail"]``."""
        names = await self.queue_names()
        store = self._store
        async with store.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(store.keys.queue(name))
            sizes = [int(n) for n in await pipe.execute()]
        return dict(sorted(zip(names, sizes, strict=True), key=lambda kv: (-kv[1], kv[0])))

    async def queue_size(self, name: str) -> int:
        """Jobs waiting in one queue. Example: ``await api.queue_size("default")``."""
        store = self._store
        return int(await store.client.llen(store.keys.queue(name)))

    async def stats(self) -> Stats:
        """The same snapshot as :meth:`conveyor.api.Api.stats`. Example: ``(await api.stats())
        .retry_size``."""
        store = self._store
        k = store.keys
        async with store.client.pipeline(transaction=False) as pipe:
            pipe.get(k.stat("processed"))
            pipe.get(k.stat("failed"))
            for key in (k.schedule, k.retry, k.dead, k.interrupted):
                pipe.zcard(key)
            pipe.smembers(k.processes)
            pipe.lrange(k.queue("default"), -1, -1)
            processed, failed, sched, retry, dead, interrupted, procs, tail = await pipe.execute()
        sizes = await self.queue_sizes()
        latency = 0.0
        if tail:
            latency = JobRecord.from_raw(str(tail[0]), "default").latency(self.app.clock.time())
        return Stats(
            processed=int(processed or 0),
            failed=int(failed or 0),
            scheduled_size=int(sched),
            retry_size=int(retry),
            dead_size=int(dead),
            interrupted_size=int(interrupted),
            processes_size=len(procs),
            workers_size=await self._busy(sorted(str(p) for p in procs)),
            enqueued=sum(sizes.values()),
            default_queue_latency=latency,
            queues=sizes,
        )

    async def _busy(self, identities: list[str]) -> int:
        store = self._store
        async with store.client.pipeline(transaction=False) as pipe:
            for identity in identities:
                pipe.hget(store.keys.process(identity), "busy")
            return sum(int(b or 0) for b in await pipe.execute())

    async def find_job(self, jid: str) -> FoundJob | None:
        """The job with ``jid`` in a queue or a set (scheduled, retry, dead, interrupted), or
        ``None``. Scans (SCAN-style, a page per round trip): an admin read, not a hot path."""
        for zset in _SETS:
            found = await self._find_in_set(zset, jid)
            if found is not None:
                return found
        for name in await self.queue_names():
            found = await self._find_in_queue(name, jid)
            if found is not None:
                return found
        return None

    async def _find_in_set(self, zset: Place, jid: str) -> FoundJob | None:
        store = self._store
        key = getattr(store.keys, zset)
        pattern = f"*{glob_escape(json.dumps(jid))}*"
        async for raw, score in store.client.zscan_iter(key, match=pattern, count=PAGE):
            record = JobRecord.from_raw(str(raw), score=float(score))
            if record.jid == jid:
                return FoundJob(zset, None, record)
        return None

    async def _find_in_queue(self, name: str, jid: str) -> FoundJob | None:
        store = self._store
        start = 0
        while True:
            rows: list[Any] = await store.client.lrange(
                store.keys.queue(name), start, start + PAGE - 1
            )
            for raw in rows:
                if jid in raw:
                    record = JobRecord.from_raw(str(raw), name)
                    if record.jid == jid:
                        return FoundJob("queue", name, record)
            if len(rows) < PAGE:
                return None
            start += PAGE
