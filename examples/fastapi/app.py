"""A FastAPI app that enqueues Conveyor jobs from its event loop with the async API.

Run it (see README.md)::

    uvicorn examples.fastapi.app:api            # the web app
    conveyor worker -r examples.fastapi.app:jobs  # a worker for its jobs

``jobs`` is the Conveyor app the worker loads; ``api`` the ASGI app. Both read their Redis from
``CONVEYOR_REDIS_URL`` (or the embedded server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from conveyor import App, Settings
from conveyor.api.aio import AsyncApi
from conveyor.errors import EnqueueError

jobs = App(Settings.load())


@jobs.job(idempotent=True, queue="default")
def send_welcome(user_id: int) -> None:
    """The job: here it only records that it ran (a real one would send the e-mail)."""
    jobs.store.client.sadd("example:welcomed", user_id)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield
    await jobs.aclose()  # the redis.asyncio connections belong to this loop


api = FastAPI(title="Conveyor example", lifespan=lifespan)


@api.post("/users/{user_id}/welcome")
async def welcome(user_id: int) -> dict[str, Any]:
    """Enqueue the welcome job without blocking the event loop; a twin enqueued before the
    first one ran is dropped (the job is idempotent)."""
    result = await send_welcome.aperform_async(user_id)
    return {"jid": result.jid, "queued": bool(result), "dropped": result.dropped}


@api.post("/jobs/{name}")
async def enqueue_by_name(name: str, args: list[Any]) -> dict[str, Any]:
    """Enqueue any job by its wire name (e.g. one only a Ruby worker runs)."""
    try:
        result = await jobs.aenqueue(name, *args)
    except EnqueueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return {"jid": result.jid, "queued": bool(result)}


@api.get("/stats")
async def stats() -> dict[str, Any]:
    """Queue sizes and totals from the async data API."""
    snapshot = await AsyncApi(jobs).stats()
    return {
        "enqueued": snapshot.enqueued,
        "processed": snapshot.processed,
        "queues": snapshot.queues,
    }
