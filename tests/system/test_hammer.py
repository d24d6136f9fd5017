"""8 worker processes with many threads each hammer cron and a concurrency-limited class
(SPEC LIMIT-1, LIMIT-3): every cron tick is enqueued once, and the number of limited jobs
running at once, measured inside the jobs, never exceeds the limit."""

from __future__ import annotations

import json
import signal
import time

import pytest
import redis
from support import APPS, StartProcess, wait_for

from conveyor import App, Settings

APP = str(APPS / "hammer_app.py")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_eight_processes_cron_once_per_tick_and_limit_never_exceeded(
    redis_url: str, r: redis.Redis, processes: StartProcess
) -> None:
    procs = [
        processes(
            APP,
            CONVEYOR_REDIS_URL=redis_url,
            CONVEYOR_CONCURRENCY="8",
            CONVEYOR_HEARTBEAT_INTERVAL="0.5",
            CONVEYOR_LIVENESS_TTL="3",
        )
        for _ in range(8)
    ]
    try:
        wait_for(lambda: r.scard("processes") == 8, timeout=40, interval=0.2)
        app = App(Settings(redis_url=redis_url))
        app.client.enqueue_bulk("limited", [[i] for i in range(400)], {})
        app.close()
        started = time.time()
        wait_for(lambda: r.scard("limited:done") == 400, timeout=60, interval=0.2)
        # Let cron run for a few more seconds with every process competing for each tick.
        time.sleep(max(0.0, 6 - (time.time() - started)))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    assert int(r.get("limited:peak") or 0) == 3, "the limit was reached and never exceeded"
    assert r.get("limited:now") == "0"
    # Ticks that ran, plus any enqueued just before the shutdown and not run yet.
    ticks = r.lrange("ticks", 0, -1) + [
        str(json.loads(raw)["cron_at"]) for raw in r.lrange("queue:default", 0, -1)
    ]
    assert len(ticks) >= 5, f"cron should have fired about once a second, got {len(ticks)}"
    assert len(ticks) == len(set(ticks)), "a tick was enqueued twice"
