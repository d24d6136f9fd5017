"""The asyncio worker's acknowledgements (conveyor/core/aio_finisher.py) on a real Redis: one
finish.lua call per batch, slots freed in its round trip, and a batch that failed kept."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from conveyor import App
from conveyor.clock import SYSTEM_CLOCK
from conveyor.core.aio_finisher import AioFinisher
from conveyor.core.finisher import Counters
from conveyor.core.health import Health
from conveyor.core.middleware import FetchedJob
from conveyor.core.units import Units
from conveyor.redis import Outcome
from conveyor.redis.aio_store import AioStore
from conveyor.redis.connection import connect_async

ME = "host:1:aiofin"


def raw(i: int) -> str:
    return json.dumps({"class": "J", "args": [i], "jid": f"j{i}", "queue": "default"})


def finisher(app: App, astore: AioStore, counters: Counters) -> AioFinisher:
    held = Units(20, 10, concurrency=10, clock=SYSTEM_CLOCK)
    return AioFinisher(
        app,
        ME,
        astore,
        held=held,
        counters=counters,
        health=Health(SYSTEM_CLOCK),
        refill=lambda: 10,
        wedge_after=60.0,
    )


def test_finished_jobs_are_acknowledged_in_one_batch_and_run_returns_at_finish(
    app: App, r: redis.Redis
) -> None:
    r.lpush(f"conveyor:working:{ME}", *(raw(i) for i in range(3)))
    counters = Counters()

    async def main() -> None:
        astore = AioStore(connect_async(app.settings), app.store.keys)
        f = finisher(app, astore, counters)
        for i in range(3):
            f.add(Outcome("ok", raw(i)), FetchedJob("default", raw(i), None, None))
        task = asyncio.create_task(f.run())
        f.finish()
        await asyncio.wait_for(task, 10)
        await astore.close()

    asyncio.run(main())
    assert r.llen(f"conveyor:working:{ME}") == 0
    assert r.get("stat:processed") == "3" and counters.processed == 3


def test_a_batch_whose_hook_raised_is_kept_for_the_next_attempt(
    app: App, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    r.lpush(f"conveyor:working:{ME}", raw(1))
    counters = Counters()
    calls = {"n": 0}
    real = AioStore.finish

    async def flaky(self: AioStore, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("a bug somewhere in the acknowledgement")
        return await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(AioStore, "finish", flaky)

    async def main() -> None:
        astore = AioStore(connect_async(app.settings), app.store.keys)
        f = finisher(app, astore, counters)
        f.add(Outcome("ok", raw(1)), FetchedJob("default", raw(1), None, None))
        with pytest.raises(ValueError, match="a bug somewhere"):
            await f.flush(final=False)
        assert [o.raw for o, _ in f.outcomes] == [raw(1)], "kept, never dropped"
        await f.flush(final=False)
        assert f.outcomes == []
        await astore.close()

    asyncio.run(main())
    assert r.llen(f"conveyor:working:{ME}") == 0 and counters.processed == 1
