"""The engine's Redis operations (conveyor.redis.store) on a real Redis: each multi-key step
is atomic and leaves Sidekiq's keys as Sidekiq would."""

from __future__ import annotations

import json
import threading

import pytest
import redis

from conveyor.redis import Keys, Outcome, Store
from conveyor.redis.limits import LimitStore
from conveyor.redis.scripts import ScriptCall


def _store(redis_url: str) -> Store:
    return Store(redis.Redis.from_url(redis_url, decode_responses=True), Keys())


def _job(jid: str, queue: str = "default") -> str:
    return json.dumps({"class": "Work", "args": [], "jid": jid, "queue": queue, "retry": True})


def test_push_registers_queues_and_schedules(redis_url: str, r: redis.Redis) -> None:
    store = _store(redis_url)
    store.push({"mail": [_job("a", "mail"), _job("b", "mail")]}, [(2e9, _job("c"))])
    assert r.smembers("queues") == {"mail"}
    assert [json.loads(x)["jid"] for x in r.lrange("queue:mail", 0, -1)] == ["b", "a"]
    assert r.zrange("schedule", 0, -1, withscores=True) == [(_job("c"), 2e9)]


def test_fetch_moves_oldest_first_into_the_working_list(redis_url: str, r: redis.Redis) -> None:
    store = _store(redis_url)
    store.push({"low": [_job("l1", "low")], "high": [_job("h1", "high"), _job("h2", "high")]})
    fetched = store.fetch("w1", ["high", "low"], 2)
    assert [(q, json.loads(raw)["jid"]) for q, raw in fetched] == [("high", "h1"), ("high", "h2")]
    assert r.llen("conveyor:working:w1") == 2 and r.llen("queue:high") == 0
    assert store.working_jobs("w1") and r.llen("queue:low") == 1


def test_both_fetches_register_the_process_so_a_sweep_finds_its_list(
    redis_url: str, r: redis.Redis
) -> None:
    # A sweep that took the process for dead removed it from the registry; whichever fetch
    # moves its next job must put it back, or a crash then strands that job.
    store = _store(redis_url)
    store.push({"default": [_job("a"), _job("b")]})
    assert store.fetch("w1", ["default"], 1)
    r.srem("conveyor:working-registry", "w1")
    assert store.fetch_blocking("w1", "default", 1.0) is not None
    assert r.smembers("conveyor:working-registry") == {"w1"}
    assert r.llen("conveyor:working:w1") == 2


def test_finish_acknowledges_and_files_retries_and_dead_jobs(
    redis_url: str, r: redis.Redis
) -> None:
    store = _store(redis_url)
    store.push({"default": [_job("ok"), _job("retry"), _job("dead")]})
    fetched = dict((json.loads(raw)["jid"], raw) for _, raw in store.fetch("w1", ["default"], 3))
    store.finish(
        "w1",
        [
            Outcome("ok", fetched["ok"]),
            Outcome("retry", fetched["retry"], 2e9, _job("retry-2")),
            Outcome("dead", fetched["dead"], 1e9, _job("dead-2")),
        ],
        "2026-12-05",
        dead_max=10,
        dead_cutoff=0,
    )
    assert r.llen("conveyor:working:w1") == 0
    assert r.zrange("retry", 0, -1) == [_job("retry-2")]
    assert r.zrange("dead", 0, -1) == [_job("dead-2")]
    assert r.get("stat:processed") == "3" and r.get("stat:failed") == "2"
    assert r.get("stat:processed:2026-12-05") == "3"


def test_requeue_puts_jobs_back_in_front_in_order(redis_url: str, r: redis.Redis) -> None:
    store = _store(redis_url)
    store.push({"default": [_job("1"), _job("2"), _job("3")]})
    fetched = store.fetch("w1", ["default"], 2)
    assert store.requeue("w1", fetched) == 2
    assert r.llen("conveyor:working:w1") == 0
    again = store.fetch("w1", ["default"], 3)
    assert [json.loads(raw)["jid"] for _, raw in again] == ["1", "2", "3"]


def _slot_release(store: Store, member: str) -> ScriptCall:
    return LimitStore(store).release_call([("Work", 5, member)], 0.0, 300)


def test_calls_riding_with_an_acknowledgement_run_just_before_it(
    redis_url: str, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = _store(redis_url)
    store.push({"default": [_job("a"), _job("b")]})
    fetched = [raw for _, raw in store.fetch("w1", ["default"], 2)]
    r.zadd("conveyor:limit:Work:running", {"w1|a": 1.0, "w1|b": 1.0})
    # A rider whose script fails (a Lua error) is logged; the acknowledgement still happens.
    broken = ScriptCall("limit", ["k1", "k2", "k3"], ["acquire", 0, "p", 5, "w1", "not-a-count"])
    store.finish(
        "w1",
        [Outcome("ok", fetched[0])],
        "2026-12-05",
        dead_max=10,
        dead_cutoff=0,
        riders=[_slot_release(store, "w1|a"), broken],
    )
    assert r.zrange("conveyor:limit:Work:running", 0, -1) == ["w1|b"]
    assert r.lrange("conveyor:working:w1", 0, -1) == [fetched[1]]
    assert r.get("stat:processed") == "1"
    assert "script limit riding with an acknowledgement failed" in caplog.text
    # After a restart or a failover the server knows no script: each call that met NOSCRIPT
    # did not run, and runs again once loaded.
    r.script_flush()
    store.finish(
        "w1",
        [Outcome("ok", fetched[1])],
        "2026-12-05",
        dead_max=10,
        dead_cutoff=0,
        riders=[_slot_release(store, "w1|b")],
    )
    assert r.zcard("conveyor:limit:Work:running") == 0
    assert r.llen("conveyor:working:w1") == 0 and r.get("stat:processed") == "2"


def test_a_thread_client_is_the_calling_threads_own_connection_for_its_life(
    redis_url: str, r: redis.Redis
) -> None:
    # What app.redis() hands a job: one connection per thread (no pool checkout around each
    # call), the same client every time in one thread, another in another thread.
    store = _store(redis_url)
    mine = store.thread_client()
    assert store.thread_client() is mine and mine.incr("visits") == 1
    ids: list[int] = []

    def other() -> None:
        client = store.thread_client()
        client.incr("visits")
        ids.append(client.client_id())

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(10)
    assert r.get("visits") == "2"
    assert len(ids) == 1 and ids[0] != mine.client_id() and mine.client_id() == mine.client_id()
    store.client.close()
