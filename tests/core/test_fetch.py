"""Reliable fetch: queue order, gates, batch and blocking fetch, giving jobs back."""

from __future__ import annotations

import random

import redis

from conveyor import App
from conveyor.core.fetch import Fetch, queue_order


def test_weighted_queue_order() -> None:
    rng = random.Random(7)
    queues = [("heavy", 3), ("light", 1)]
    firsts = [queue_order(queues, {}, strict=False, rng=rng)[0] for _ in range(4000)]
    share = firsts.count("heavy") / len(firsts)
    assert 0.7 < share < 0.8
    assert sorted(queue_order(queues, {}, strict=False, rng=rng)) == ["heavy", "light"]
    assert queue_order(queues, {}, strict=True, rng=rng) == ["heavy", "light"]


def test_shut_gates_drop_queues_and_a_failing_gate_counts_as_open() -> None:
    def broken() -> bool:
        raise RuntimeError("gate bug")

    gates = {"a": lambda: False, "b": broken}
    order = queue_order([("a", 1), ("b", 1), ("c", 1)], gates, strict=True, rng=random.Random())
    assert order == ["b", "c"]


def test_batch_fetch_moves_jobs_in_order_and_give_back_restores_them(
    app: App, r: redis.Redis
) -> None:
    app.configure(app.settings.replace(queues="high low", strict_order=True))
    r.lpush("queue:high", "h1", "h2")
    r.lpush("queue:low", "l1", "l2", "l3")
    fetch = Fetch(app, "host:1:abc")
    got = fetch.batch(fetch.order(), 4)
    assert got == [("high", "h1"), ("high", "h2"), ("low", "l1"), ("low", "l2")]
    working = app.store.keys.working("host:1:abc")
    assert r.lrange(working, 0, -1) == ["l2", "l1", "h2", "h1"]
    assert fetch.give_back(got) == 4
    assert r.llen(working) == 0
    assert r.lrange("queue:high", 0, -1) == ["h2", "h1"]  # h1 runs next again
    assert r.lrange("queue:low", 0, -1) == ["l3", "l2", "l1"]


def test_blocking_fetch_waits_for_one_job(app: App, r: redis.Redis) -> None:
    fetch = Fetch(app, "host:1:abc")
    assert fetch.blocking(["default"]) == []
    r.lpush("queue:default", "j")
    assert fetch.blocking(["default"]) == [("default", "j")]
    assert r.lrange(app.store.keys.working("host:1:abc"), 0, -1) == ["j"]
