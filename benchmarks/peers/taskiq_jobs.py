"""taskiq: both workloads as async tasks on taskiq-redis' ``RedisStreamBroker`` (the one with
acknowledgements); no batch API, so a loop of ``kiq``. The worker is taskiq's own CLI
(``taskiq worker taskiq_jobs:broker --workers 1``)."""

from __future__ import annotations

import asyncio

import peer_common
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(url=peer_common.url())


@broker.task(task_name="noop")
async def noop(index: int) -> None:
    await peer_common.anoop(index)


@broker.task(task_name="sleep")
async def sleep(total: int) -> None:
    await peer_common.asleep(total)


@broker.task(task_name="latency")
async def latency(sent: float) -> None:
    await peer_common.alatency(sent)


@broker.task(task_name="incr")
async def incr(total: int) -> None:
    await peer_common.aincr(total)


def enqueue(kind: str, jobs: int) -> float:
    task = {"noop": noop, "sleep": sleep, "latency": latency, "incr": incr}[kind]

    async def go() -> float:
        await broker.startup()  # also creates the consumer group, before the first message
        started = asyncio.get_running_loop().time()
        for a in peer_common.arguments(kind, jobs):
            await task.kiq(a)
        seconds = asyncio.get_running_loop().time() - started
        await broker.shutdown()
        return seconds

    return asyncio.run(go())
