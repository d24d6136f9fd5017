"""An app of ``async def`` jobs for ``conveyor worker --mode asyncio`` (settings from
``CONVEYOR_*``); each job records the pid and thread it ran in."""

from __future__ import annotations

import os
import threading

import redis.asyncio

from conveyor import App

app = App()


@app.job()
async def note(n: int) -> None:
    client = redis.asyncio.Redis.from_url(str(app.settings.redis_url))
    await client.rpush("notes", f"{n}:{os.getpid()}:{threading.current_thread().name}")
    await client.aclose()
