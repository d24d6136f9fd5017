from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
import redis

from conveyor import App, ConfigurationError, NotFoundError, Settings
from conveyor.clock import FakeClock
from conveyor.features.cron import Cron, schedule
from conveyor.features.flags import Flags

# 2026-01-01 00:00:00 UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()


@pytest.fixture
def clocked(redis_url: str, r: redis.Redis) -> tuple[App, FakeClock]:
    clock = FakeClock(T0 - 30)  # created before the first tick of interest
    app = App(Settings(redis_url=redis_url), clock=clock)
    return app, clock


def enqueued(r: redis.Redis, queue: str = "default") -> list[dict[str, object]]:
    return [json.loads(x) for x in reversed(r.lrange(f"queue:{queue}", 0, -1))]


def test_each_tick_is_enqueued_once(clocked: tuple[App, FakeClock], r: redis.Redis) -> None:
    app, clock = clocked

    @app.job(queue="reports")
    def report(kind: str) -> None: ...

    schedule(app, "every-minute", "* * * * *", report, args=["daily"])
    cron = Cron(app)
    assert cron.tick() == 0  # created at T0-30: the T0-60 tick predates the entry
    clock.advance(31)  # T0+1
    assert cron.tick() == 1
    assert cron.tick() == 0 and Cron(app).tick() == 0  # same tick, any process
    clock.advance(60)
    assert cron.tick() == 1
    jobs = enqueued(r, "reports")
    assert [j["args"] for j in jobs] == [["daily"], ["daily"]]
    assert jobs[0]["cron"] == "every-minute" and jobs[0]["class"] == "report"
    assert cron.last_tick("every-minute") == T0 + 60


def test_missed_ticks_older_than_grace_are_skipped(
    clocked: tuple[App, FakeClock], r: redis.Redis
) -> None:
    app, clock = clocked
    schedule(app, "hourly", "0 * * * *", "Hourly", grace=120)
    cron = Cron(app)
    cron.tick()
    clock.advance(3 * 3600 + 30 + 600)  # down for hours; the last tick is 10 minutes old
    assert cron.tick() == 0
    clock.advance(3600 - 600 + 60)  # one minute past the next hour
    assert cron.tick() == 1
    assert len(enqueued(r)) == 1


def test_time_zones(clocked: tuple[App, FakeClock], r: redis.Redis) -> None:
    app, clock = clocked
    # 09:00 in Seoul is 00:00 UTC.
    schedule(app, "seoul-morning", "0 9 * * *", "Morning", tz="Asia/Seoul")
    cron = Cron(app)
    cron.tick()
    clock.advance(40)
    assert cron.tick() == 1
    assert cron.last_tick("seoul-morning") == T0


def test_disable_enable_destroy_and_enqueue_now(
    clocked: tuple[App, FakeClock], r: redis.Redis
) -> None:
    app, clock = clocked
    schedule(app, "m", "* * * * *", "Job")
    cron = Cron(app)
    cron.tick()
    cron.disable("m")
    clock.advance(31)
    assert cron.tick() == 0
    cron.sync()  # a redeploy keeps it disabled
    assert not cron.get("m").enabled
    cron.enable("m")
    assert cron.tick() == 1
    jid = cron.enqueue_now("m")
    assert len(jid) == 24 and len(enqueued(r)) == 2
    cron.destroy("m")
    with pytest.raises(NotFoundError, match="no cron entry named 'm'"):
        cron.get("m")


def test_gated_class_is_not_scheduled_until_its_flag_is_on(
    clocked: tuple[App, FakeClock], r: redis.Redis
) -> None:
    app, clock = clocked

    @app.job(feature_flag="new_sync")
    def sync() -> None: ...

    schedule(app, "sync", "* * * * *", sync)
    cron = Cron(app)
    cron.tick()
    clock.advance(31)
    assert cron.tick() == 0
    Flags.of(app).enable("new_sync")
    assert cron.tick() == 1


def test_bad_entries_are_refused(clocked: tuple[App, FakeClock]) -> None:
    app, _ = clocked
    with pytest.raises(ConfigurationError, match="'61 \\* \\* \\* \\*' is not a valid cron"):
        schedule(app, "x", "61 * * * *", "Job")
    with pytest.raises(ConfigurationError, match="unknown time zone 'Mars/Base'"):
        schedule(app, "x", "* * * * *", "Job", tz="Mars/Base")


def test_many_threads_racing_enqueue_each_tick_once(
    clocked: tuple[App, FakeClock], r: redis.Redis
) -> None:
    app, clock = clocked
    schedule(app, "race", "* * * * *", "Job")
    Cron(app).tick()
    for _ in range(5):
        clock.advance(60)
        crons = [Cron(App(app.settings, clock=clock)) for _ in range(8)]
        threads = [threading.Thread(target=c.tick) for c in crons]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(enqueued(r)) == 5
