"""An asyncio-mode worker process for crash tests: ``python tests/apps/aio_crash_app.py`` with
CONVEYOR_* settings. Like crash_app.py, but the job is ``async def`` on redis.asyncio, and the
worker is :class:`~conveyor.core.aio_worker.AioWorker`; jobs record their own side effects."""

from __future__ import annotations

import asyncio
import os
import time

import redis.asyncio

from conveyor import App, Job, Settings
from conveyor.core.modes import create_worker

app = App(Settings.load(worker_mode="asyncio"))
_side: list[redis.asyncio.Redis] = []


def side() -> redis.asyncio.Redis:
    # Created on the worker's event loop, at the first job.
    if not _side:
        _side.append(
            redis.asyncio.Redis.from_url(os.environ["CONVEYOR_REDIS_URL"], decode_responses=True)
        )
    return _side[0]


@app.job(name="Sleepy")
class Sleepy(Job):
    async def perform(self, i: int, seconds: float) -> None:
        await side().rpush("starts", f"{i}:{os.getpid()}:{time.time()}")
        if not await side().exists("fast"):
            await asyncio.sleep(seconds)
        await side().hincrby("completions", str(i), 1)


if __name__ == "__main__":
    create_worker(app).run()
