"""The asyncio store (conveyor/redis/aio_store.py): the same scripts and lists as the
synchronous store, on its own connections, surviving a script flush, a killed connection and
a cancelled blocking fetch; real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
from support import wait_for

from conveyor import Settings
from conveyor.redis import Keys, Outcome, Store
from conveyor.redis.aio_store import AioStore, holding_own_client, own_client
from conveyor.redis.connection import connect_async
from conveyor.redis.limits import LimitStore
from conveyor.redis.scripts import ScriptCall

ME = "host:1:aio"


def job(i: int) -> str:
    return json.dumps({"class": "J", "args": [i], "jid": f"j{i}", "queue": "default"})


def run(settings: Settings, body: Callable[[AioStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        store = AioStore(connect_async(settings), Keys(settings.key_prefix))
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_fetch_and_finish_move_jobs_as_the_sync_store_does(
    settings: Settings, r: redis.Redis
) -> None:
    sync = Store(r)
    r.lpush("queue:default", *(job(i) for i in range(5)))

    async def body(store: AioStore) -> list[tuple[str, str]]:
        fetched = await store.fetch(ME, ["low", "default"], 3)
        found, trimmed = await store.finish(
            ME,
            [Outcome("ok", raw) for _, raw in fetched[:2]]
            + [Outcome("retry", fetched[2][1], 99.0, "retried")],
            "2026-12-05",
            10,
            0.0,
        )
        assert found == 3 and trimmed is None
        assert r.sismember("conveyor:working-registry", ME), "fetch registers the process"
        return fetched

    fetched = run(settings, body)
    assert [json.loads(raw)["args"] for _, raw in fetched] == [[0], [1], [2]]
    assert {q for q, _ in fetched} == {"default"}
    assert r.llen("queue:default") == 2 and r.llen(f"conveyor:working:{ME}") == 0
    assert r.zrange("retry", 0, -1, withscores=True) == [("retried", 99.0)]
    assert r.get("stat:processed") == "3" and r.get("stat:failed") == "1"
    assert r.get("stat:processed:2026-12-05") == "3"
    # What the sync store fetches next is what is left, in the same order.
    assert [json.loads(raw)["args"] for _, raw in sync.fetch(ME, ["default"], 5)] == [[3], [4]]


def test_blocking_fetch_moves_one_job_into_the_working_list(
    settings: Settings, r: redis.Redis
) -> None:
    async def body(store: AioStore) -> tuple[str | None, str | None]:
        empty = await store.fetch_blocking(ME, "default", 0.05)
        r.lpush("queue:default", job(7))
        r.srem("conveyor:working-registry", ME)  # as a sweep that took the process for dead
        return empty, await store.fetch_blocking(ME, "default", 1.0)

    empty, got = run(settings, body)
    assert empty is None and got == job(7)
    assert r.lrange(f"conveyor:working:{ME}", 0, -1) == [job(7)]
    assert r.smembers("conveyor:working-registry") == {ME}  # registered again with the move


def test_a_flushed_script_cache_is_loaded_again(settings: Settings, r: redis.Redis) -> None:
    r.lpush("queue:default", job(1), job(2))

    async def body(store: AioStore) -> list[tuple[str, str]]:
        first = await store.fetch(ME, ["default"], 1)
        r.script_flush()  # as after a restart or a failover
        return first + await store.fetch(ME, ["default"], 1)

    assert [raw for _, raw in run(settings, body)] == [job(1), job(2)]


def test_a_killed_connection_fails_one_call_and_the_next_reconnects(
    settings: Settings, r: redis.Redis
) -> None:
    r.lpush("queue:default", job(1), job(2))

    async def body(store: AioStore) -> list[tuple[str, str]]:
        got = await store.fetch(ME, ["default"], 1)
        r.client_kill_filter(_type="normal", skipme=True)
        with pytest.raises(redis.ConnectionError):
            await store.fetch(ME, ["default"], 1)
        return got + await store.fetch(ME, ["default"], 1)

    assert [raw for _, raw in run(settings, body)] == [job(1), job(2)]
    assert r.llen("queue:default") == 0


def test_a_cancelled_blocking_fetch_leaves_no_reply_behind(
    settings: Settings, r: redis.Redis
) -> None:
    async def body(store: AioStore) -> list[tuple[str, str]]:
        waiting = asyncio.create_task(store.fetch_blocking(ME, "default", 5.0))
        await asyncio.sleep(0.2)
        waiting.cancel()  # e.g. the loop torn down while the fetch blocks
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # The connection is dropped, so the server stops blocking for it...
        wait_for(lambda: r.info("clients")["blocked_clients"] == 0, timeout=5)
        r.lpush("queue:default", job(3), job(4))
        # ...and its BLMOVE neither takes a job nor leaves a reply for the next call to read.
        return await store.fetch(ME, ["default"], 5)

    assert run(settings, body) == [("default", job(3)), ("default", job(4))]
    assert r.lrange(f"conveyor:working:{ME}", 0, -1) == [job(4), job(3)]


def test_calls_riding_with_an_acknowledgement_run_just_before_it(
    settings: Settings, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    r.lpush("queue:default", job(1), job(2))
    r.zadd("conveyor:limit:J:running", {f"{ME}|j1": 1.0, f"{ME}|j2": 1.0})
    sync = Store(r)
    broken = ScriptCall("limit", ["k1", "k2", "k3"], ["acquire", 0, "p", 5, ME, "not-a-count"])

    async def body(store: AioStore) -> None:
        fetched = [raw for _, raw in await store.fetch(ME, ["default"], 2)]
        release = LimitStore(sync).release_call([("J", 5, f"{ME}|j1")], 0.0, 300)
        found, _ = await store.finish(
            ME, [Outcome("ok", fetched[0])], "2026-12-05", 10, 0.0, riders=[release, broken]
        )
        assert found == 1
        assert r.zrange("conveyor:limit:J:running", 0, -1) == [f"{ME}|j2"]
        r.script_flush()  # NOSCRIPT for both: each is loaded and run again
        release = LimitStore(sync).release_call([("J", 5, f"{ME}|j2")], 0.0, 300)
        found, _ = await store.finish(
            ME, [Outcome("ok", fetched[1])], "2026-12-05", 10, 0.0, riders=[release]
        )
        assert found == 1
        # The connection stayed in step: the next call reads its own reply.
        assert await store.fetch(ME, ["default"], 1) == []

    run(settings, body)
    assert r.zcard("conveyor:limit:J:running") == 0
    assert r.llen(f"conveyor:working:{ME}") == 0 and r.get("stat:processed") == "2"
    assert "script limit riding with an acknowledgement failed" in caplog.text


def test_a_task_holding_its_own_client_keeps_one_connection_and_gives_it_back(
    settings: Settings,
) -> None:
    async def body(store: AioStore) -> None:
        pool = store.client.connection_pool
        ids: dict[str, set[int]] = {"a": set(), "b": set()}

        async def task(name: str) -> None:
            for _ in range(5):
                client = own_client()
                assert client is not None
                await client.incr("own:calls")
                ids[name].add(await client.client_id())

        assert own_client() is None, "no task holds one here"
        await asyncio.gather(*(holding_own_client(pool, task(n)) for n in ids))
        assert all(len(seen) == 1 for seen in ids.values()), "one connection per task"
        assert ids["a"] != ids["b"]
        assert not pool._in_use_connections, "their connections went back to the pool"  # type: ignore[attr-defined]
        assert int(await store.client.get("own:calls")) == 10

    run(settings, body)
