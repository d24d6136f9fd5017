"""The metrics scenario shared by the worker-side and /metrics tests."""

from __future__ import annotations

import redis

from conveyor import App, Settings
from conveyor.clock import FakeClock
from conveyor.features import metrics


def scenario(settings: Settings, r: redis.Redis) -> tuple[App, FakeClock]:
    """3 slow jobs (0.3 s), 2 failing jobs (2 s, no retry), a retry attempt, a duplicate
    enqueue, a concurrency deferral; durations come from a fake clock advanced by the jobs."""
    clock = FakeClock()
    app = App(settings.replace(concurrency=1), clock=clock)
    metrics.install(app, flush_interval=3600)

    @app.job(queue="mail")
    def slow(n: int) -> None:
        clock.advance(0.3)

    @app.job(queue="mail", retry=0)
    def bad(n: int) -> None:
        clock.advance(2.0)
        raise RuntimeError(f"bad {n}")

    @app.job(idempotent=True)
    def dup(n: int) -> None: ...

    @app.job(concurrency_limit=1)
    def limited(n: int) -> None: ...

    for i in range(3):
        slow.perform_async(i)
    bad.perform_async(1)
    bad.perform_async(2)
    app.client.push_payload({"class": "slow", "args": [9], "queue": "mail", "retry_count": 0})
    assert dup.perform_async(1)
    assert not dup.perform_async(1), "the twin is dropped"
    # Another live process holds limited's only slot, so the worker defers the job.
    keys = app.store.keys
    r.set(keys.liveness("other:1:abc"), "1", px=60_000)
    r.zadd(keys.limit_running("limited"), {"other:1:abc|busy": clock.time()})
    limited.perform_async(1)
    return app, clock
