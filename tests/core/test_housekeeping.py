"""Housekeeping: reconciling the process's own working list (lost fetch replies), and sweeps
held back while Redis has just come back."""

from __future__ import annotations

import threading

import redis
from support import wait_for

from conveyor import App
from conveyor.core.health import Health
from conveyor.core.housekeeping import Housekeeper, Reconciler
from conveyor.core.payload import dumps
from conveyor.core.units import Units

ME = "host:1:me"


def job(i: int, queue: str = "q") -> str:
    return dumps({"class": "A", "args": [i], "queue": queue})


def test_entries_nobody_holds_go_back_after_two_passes(app: App, r: redis.Redis) -> None:
    units = Units(4, 2, concurrency=2, clock=app.clock)
    working = app.store.keys.working(ME)
    r.lpush(working, job(1), job(2), job(3, "other"))
    units.hold([job(1)])  # the process holds job 1 (running, say); 2 and 3 were a lost reply
    reconciler = Reconciler(app, ME, units, app.store)
    assert reconciler.pass_once() == 0, "one pass is not enough: a reply may be on its way"
    assert reconciler.pass_once() == 2
    assert r.lrange(working, 0, -1) == [job(1)]
    assert r.lrange("queue:q", 0, -1) == [job(2)] and r.lrange("queue:other", 0, -1) == [
        job(3, "other")
    ]


def test_nothing_goes_back_while_a_fetch_from_before_is_under_way(app: App, r: redis.Redis) -> None:
    units = Units(4, 2, concurrency=2, clock=app.clock)
    r.lpush(app.store.keys.working(ME), job(1))
    reconciler = Reconciler(app, ME, units, app.store)
    with units.fetching():  # its reply could still bring job 1
        reconciler.pass_once()
        assert reconciler.pass_once() == 0
    assert r.llen(app.store.keys.working(ME)) == 1


def test_no_sweep_right_after_a_redis_error(app: App, r: redis.Redis) -> None:
    wait_for(lambda: app.store.server_uptime() > 3, timeout=5)  # a fresh server holds back too
    r.sadd(app.store.keys.working_registry, "host:2:gone")
    r.lpush(app.store.keys.working("host:2:gone"), job(1))
    health = Health(app.clock)
    health.failed(health.register("heartbeat"), redis.ConnectionError("refused"))
    units = Units(4, 2, concurrency=2, clock=app.clock)
    keeper = Housekeeper(app, ME, units=units, health=health, stopping=threading.Event())
    keeper.sweep()
    assert r.llen("queue:q") == 0, "live processes may not have refreshed their keys yet"
    health.redis_error_at = None
    keeper.sweep()
    assert r.llen("queue:q") == 1
