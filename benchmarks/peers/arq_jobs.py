"""arq: both workloads as coroutines; no batch API, so a loop of ``enqueue_job``. The worker is
``arq.run_worker`` with the default settings (``max_jobs`` 10), logging at WARNING: the ``arq``
CLI logs two INFO lines per job."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import peer_common
from arq import create_pool, run_worker
from arq.connections import RedisSettings


async def noop(ctx: dict[str, Any], index: int) -> None:
    await peer_common.anoop(index)


async def sleep(ctx: dict[str, Any], total: int) -> None:
    await peer_common.asleep(total)


async def latency(ctx: dict[str, Any], sent: float) -> None:
    await peer_common.alatency(sent)


async def incr(ctx: dict[str, Any], total: int) -> None:
    await peer_common.aincr(total)


class WorkerSettings:
    functions: ClassVar = [noop, sleep, latency, incr]
    redis_settings = RedisSettings.from_dsn(peer_common.url())


def enqueue(kind: str, jobs: int) -> float:
    async def go() -> float:
        pool = await create_pool(WorkerSettings.redis_settings)
        await pool.ping()
        started = asyncio.get_running_loop().time()
        for a in peer_common.arguments(kind, jobs):
            await pool.enqueue_job(kind, a)
        seconds = asyncio.get_running_loop().time() - started
        await pool.aclose()
        return seconds

    return asyncio.run(go())


def work(*_: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    run_worker(WorkerSettings)  # type: ignore[arg-type]
