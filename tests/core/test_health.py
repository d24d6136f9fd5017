"""Loop health: a loop survives what it raises, gives up only on repeated non-Redis failures,
and a loop without progress is reported wedged."""

from __future__ import annotations

import json
import threading

import pytest
import redis
from support import running_worker, wait_for

from conveyor import App
from conveyor.clock import FakeClock
from conveyor.core.health import FATAL_AFTER, Health, run_loop


def test_a_loop_survives_failures_counts_them_and_carries_on() -> None:
    health = Health(FakeClock())
    state = health.register("fetch", bound=60)
    stop = threading.Event()
    calls: list[int] = []

    def step() -> bool:
        calls.append(1)
        if len(calls) <= 3:
            raise ValueError("boom")
        if len(calls) == 5:
            stop.set()
        return True

    fatal: list[str] = []
    run_loop(health, state, step, stop, fatal.append)
    assert len(calls) == 5 and state.errors == 3 and state.consecutive == 0
    assert "ValueError: boom" in state.last_error and not fatal


def test_a_loop_failing_every_time_is_fatal_but_a_redis_outage_is_not() -> None:
    health = Health(FakeClock())
    fatal: list[str] = []
    stop = threading.Event()
    stop.wait = lambda timeout=None: False  # type: ignore[method-assign]  # no real back-off

    def broken() -> bool:
        raise TypeError("bug")

    run_loop(health, health.register("finish"), broken, stop, fatal.append)
    assert fatal == [f"finish loop failed {FATAL_AFTER} times in a row"]

    outage = health.register("heartbeat")
    count = [0]

    def redis_down() -> bool:
        count[0] += 1
        if count[0] > FATAL_AFTER * 2:
            return False
        raise redis.ConnectionError("refused")

    run_loop(health, outage, redis_down, stop, fatal.append)
    assert len(fatal) == 1 and outage.errors == FATAL_AFTER * 2
    assert health.redis_quiet_for() < 1


def test_no_progress_for_the_bound_is_wedged_and_reported() -> None:
    clock = FakeClock()
    health = Health(clock)
    fetch = health.register("fetch", bound=60)
    health.register("heartbeat")  # no bound: never wedged
    clock.advance(30)
    health.progress(fetch)
    clock.advance(59)
    assert health.wedged() == []
    clock.advance(2)
    assert health.wedged() == ["fetch"]
    report = json.loads(health.report())
    assert report["fetch"]["ok"] is False and report["heartbeat"]["ok"] is True


def test_a_loop_never_backs_off_longer_than_its_cap() -> None:
    """However long Redis is down, the heartbeat retries within half its interval: a longer
    back-off after the outage would leave a live process looking dead (and swept)."""
    health = Health(FakeClock())
    beat = health.register("heartbeat", max_backoff=0.25)
    other = health.register("housekeeping")
    delays = [health.failed(beat, redis.ConnectionError("down")) for _ in range(30)]
    assert max(delays) == 0.25
    assert max(health.failed(other, redis.ConnectionError("down")) for _ in range(30)) == 5.0


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_the_workers_heartbeat_retries_within_half_its_interval(app: App, mode: str) -> None:
    app.configure(app.settings.replace(heartbeat_interval=0.4, worker_mode=mode))
    with running_worker(app) as worker:
        loops = wait_for(lambda: worker.health.loops.get("heartbeat"), 10, "the heartbeat loop")
        assert loops.max_backoff == 0.2
