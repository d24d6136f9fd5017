from __future__ import annotations

import json
import random
import threading

import redis

from conveyor import App, Settings
from conveyor.clock import FakeClock
from conveyor.core.payload import dumps
from conveyor.core.scheduler import enqueue_due, poll_interval


def test_due_jobs_move_to_their_queues_and_future_ones_stay(redis_url: str, r: redis.Redis) -> None:
    clock = FakeClock(1_000.0)
    app = App(Settings(redis_url=redis_url, poll_batch=7), clock=clock)

    @app.job()
    def later(i: int) -> None: ...

    for i in range(20):
        later.set(queue="a" if i % 2 else "b").perform_in(10 + i, i)
    r.zadd(
        "retry",
        {dumps({"class": "later", "args": [99], "queue": "a", "retry_count": 2, "at": 5}): 1_005},
    )
    clock.advance(19.5)  # jobs 0..9 are due
    assert enqueue_due(app) == 11
    assert r.zcard("schedule") == 10 and r.zcard("retry") == 0
    moved = [json.loads(x) for x in r.lrange("queue:a", 0, -1) + r.lrange("queue:b", 0, -1)]
    assert sorted(m["args"][0] for m in moved) == [*range(10), 99]
    assert all(m["enqueued_at"] == 1_019.5 and "at" not in m for m in moved)
    assert r.smembers("queues") == {"a", "b"}
    app.close()


def test_competing_pollers_promote_each_job_once(app: App, r: redis.Redis) -> None:
    r.zadd("schedule", {dumps({"class": "x", "args": [i], "queue": "q"}): 1 for i in range(2000)})
    apps = [App(app.settings) for _ in range(4)]
    threads = [threading.Thread(target=enqueue_due, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()
    args = sorted(json.loads(x)["args"][0] for x in r.lrange("queue:q", 0, -1))
    assert args == list(range(2000))


def test_malformed_scheduled_entries_go_to_dead(app: App, r: redis.Redis) -> None:
    r.zadd("schedule", {"{broken": 1})
    enqueue_due(app)
    assert r.zcard("schedule") == 0
    [dead] = r.zrange("dead", 0, -1)
    assert json.loads(dead)["args"] == ["{broken"]


def test_poll_interval_scales_with_processes() -> None:
    rng = random.Random(3)
    one = [poll_interval(5.0, 1, rng) for _ in range(1000)]
    ten = [poll_interval(5.0, 10, rng) for _ in range(1000)]
    assert min(one) >= 2.5 and max(one) <= 7.5
    assert min(ten) >= 25 and max(ten) <= 75
    assert abs(sum(ten) / len(ten) - 50) < 3
