"""SAQ: both workloads as coroutines on a Redis queue; no batch API (``Queue.batch`` only groups
aborts), so a loop of ``enqueue``. The worker is SAQ's own CLI (``saq saq_jobs.settings``,
default concurrency 10)."""

from __future__ import annotations

import asyncio
from typing import Any

import peer_common
from saq import Queue

queue = Queue.from_url(peer_common.url(), name="bench")


async def noop(ctx: dict[str, Any], *, index: int) -> None:
    await peer_common.anoop(index)


async def sleep(ctx: dict[str, Any], *, total: int) -> None:
    await peer_common.asleep(total)


async def latency(ctx: dict[str, Any], *, sent: float) -> None:
    await peer_common.alatency(sent)


async def incr(ctx: dict[str, Any], *, total: int) -> None:
    await peer_common.aincr(total)


settings = {"queue": queue, "functions": [noop, sleep, latency, incr], "concurrency": 10}


def enqueue(kind: str, jobs: int) -> float:
    key = {"noop": "index", "sleep": "total", "latency": "sent", "incr": "total"}[kind]

    async def go() -> float:
        await queue.connect()
        started = asyncio.get_running_loop().time()
        for a in peer_common.arguments(kind, jobs):
            await queue.enqueue(kind, **{key: a})
        seconds = asyncio.get_running_loop().time() - started
        await queue.disconnect()
        return seconds

    return asyncio.run(go())
