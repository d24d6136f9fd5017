"""Stores on two real redis-servers: the registry (conveyor/redis/stores.py), and a job's life
across them: the client pushes each job to the store it is routed to, with its schedule and
deduplication cookie; a process serving a store fetches, retries and runs cron there; flags
stay in the default store."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from support import run_burst, running_worker, wait_for
from support.sentinel import sentinel_cluster

from conveyor import App, Job, Settings
from conveyor.api import Api
from conveyor.clock import FakeClock
from conveyor.errors import ConfigurationError
from conveyor.features.cron import Cron, schedule
from conveyor.features.flags import Flags
from conveyor.redis.stores import Stores

RULES = [["class=Heavy", None, "b"], ["tags=slow", "slow", "b"]]


def queued(client: redis.Redis, queue: str = "default") -> list[dict[str, object]]:
    return [json.loads(x) for x in reversed(client.lrange(f"queue:{queue}", 0, -1))]


@pytest.fixture
def two(settings: Settings, store_b_url: str, rb: redis.Redis) -> Settings:
    """The test settings with store ``b`` on the second server and the routing rules."""
    return settings.replace(stores={"b": store_b_url}, routing_rules=RULES)


def make_app(s: Settings, **changes: object) -> App:
    app = App(s.replace(**changes) if changes else s)

    class Heavy(Job):
        def perform(self, n: int) -> None:
            app.store.client.rpush("ran:heavy", n)

    @app.job(tags=("slow",))
    def crunch(n: int) -> None:
        app.store.client.rpush("ran:crunch", n)

    @app.job
    def light(n: int) -> None:
        app.store.client.rpush("ran:light", n)

    app.register(Heavy)
    return app


@pytest.fixture
def app2(two: Settings) -> Iterator[App]:
    app = make_app(two)
    yield app
    app.close()


# -- the registry -----------------------------------------------------------------------------


def test_stores_connect_each_server_lazily_by_name(
    two: Settings, r: redis.Redis, rb: redis.Redis
) -> None:
    stores = Stores(two)
    assert stores.names == ("default", "b") and "b" in stores and len(stores) == 2
    assert stores.opened() == {}
    stores.get("b").client.set("where", "b")
    stores.default.client.set("where", "default")
    assert (r.get("where"), rb.get("where")) == ("default", "b")
    assert stores.get("b") is stores.get("b")
    with pytest.raises(ConfigurationError, match="no store named 'c'; known stores: default, b"):
        stores.get("c")
    stores.close()
    assert stores.opened() == {}


def test_display_url_hides_the_password(two: Settings) -> None:
    s = two.replace(stores={"b": "redis://:s3cret@127.0.0.1:1/0"})
    assert Stores(s).display_url("b") == "redis://127.0.0.1:1/0"


# -- enqueueing -------------------------------------------------------------------------------


def test_a_rule_sends_heavy_to_store_b_and_the_rest_stays(
    app2: App, r: redis.Redis, rb: redis.Redis
) -> None:
    heavy, light, crunch = (app2.registry[n] for n in ("Heavy", "light", "crunch"))
    heavy.perform_async(1)
    light.perform_async(2)
    crunch.perform_async(3)  # tags=slow: queue 'slow' in store b
    assert [j["args"] for j in queued(rb)] == [[1]]
    assert [j["args"] for j in queued(rb, "slow")] == [[3]]
    assert [j["args"] for j in queued(r)] == [[2]]
    assert rb.smembers("queues") == {"default", "slow"} and r.smembers("queues") == {"default"}


def test_bulk_scheduled_and_by_name_enqueues_follow_the_rules(
    app2: App, r: redis.Redis, rb: redis.Redis
) -> None:
    heavy = app2.registry["Heavy"]
    heavy.bulk_perform_async([[i] for i in range(50)])
    heavy.perform_in(60, 99)
    app2.enqueue("Heavy", 100)  # by wire name
    app2.client.push_payload({"class": "Heavy", "args": [101]})
    assert rb.llen("queue:default") == 52 and r.llen("queue:default") == 0
    assert rb.zcard("schedule") == 1 and r.zcard("schedule") == 0


def test_async_enqueues_route_like_sync_ones(
    two: Settings, r: redis.Redis, rb: redis.Redis
) -> None:
    app = make_app(two)

    @app.job(idempotent=True, store="b")
    def refresh(n: int) -> None: ...

    async def enqueue() -> list[bool]:
        results = [
            bool(await app.registry["Heavy"].aperform_async(1)),
            bool(await app.registry["light"].aperform_async(2)),
            bool(await refresh.aperform_async(3)),
            bool(await refresh.aperform_async(3)),  # its twin: the cookie is found in b
        ]
        await app.aclose()
        return results

    assert asyncio.run(enqueue()) == [True, True, True, False]
    assert sorted(j["args"] for j in queued(rb)) == [[1], [3]]
    assert [j["args"] for j in queued(r)] == [[2]]
    assert any(rb.scan_iter("conveyor:dedup:*")) and not any(r.scan_iter("conveyor:dedup:*"))


def test_the_store_option_wins_over_the_rules(
    two: Settings, r: redis.Redis, rb: redis.Redis
) -> None:
    app = make_app(two)

    @app.job(store="b")
    def pinned(n: int) -> None: ...

    app.registry["Heavy"].set(store="default").perform_async(1)
    pinned.perform_async(2)
    assert [j["args"] for j in queued(r)] == [[1]]
    assert [j["args"] for j in queued(rb)] == [[2]]
    with pytest.raises(ConfigurationError, match="store='c' is not configured"):
        app.registry["light"].set(store="c").perform_async(3)
    with pytest.raises(ConfigurationError, match=r"store= 'B' is not valid"):
        app.job(store="B")(lambda: None)
    app.close()


def test_the_dedup_cookie_lives_in_the_jobs_store(two: Settings, rb: redis.Redis) -> None:
    app = make_app(two)

    @app.job(idempotent=True, store="b")
    def refresh(n: int) -> None: ...

    first = refresh.perform_async(7)
    assert first and not refresh.perform_async(7)
    assert any(rb.scan_iter("conveyor:dedup:*"))
    # Without the store on the context the cookie would be looked for in the default store.
    assert not any(app.stores.default.client.scan_iter("conveyor:dedup:*"))
    app.close()


# -- serving a store --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_a_process_of_store_b_drains_b_and_leaves_default_alone(
    two: Settings, r: redis.Redis, rb: redis.Redis, mode: str
) -> None:
    producer = make_app(two)
    producer.registry["Heavy"].bulk_perform_async([[i] for i in range(20)])
    producer.registry["light"].perform_async(0)
    # The asyncio worker fetches on a connection of its own: it must be store b's too.
    worker_b = make_app(two, store="b", worker_mode=mode)
    run_burst(worker_b)
    assert sorted(map(int, rb.lrange("ran:heavy", 0, -1))) == list(range(20))
    assert r.llen("queue:default") == 1 and not r.exists("ran:light")
    assert int(rb.get("stat:processed") or 0) == 20 and r.get("stat:processed") is None
    producer.close()
    worker_b.close()


def test_retries_and_schedule_stay_in_store_b(
    two: Settings, r: redis.Redis, rb: redis.Redis
) -> None:
    app = make_app(two, store="b")

    @app.job(store="b", retry=3)
    def flaky() -> None:
        raise RuntimeError("boom")

    flaky.perform_async()
    run_burst(app)
    assert rb.zcard("retry") == 1 and r.zcard("retry") == 0
    app.close()


def test_flags_live_in_the_default_store(two: Settings, r: redis.Redis, rb: redis.Redis) -> None:
    app = make_app(two, store="b")
    Flags.of(app).enable("new_billing")
    assert r.hexists("conveyor:flags", "new_billing") and not rb.exists("conveyor:flags")
    app.close()


def test_cron_fires_only_in_the_store_its_job_routes_to(
    two: Settings, r: redis.Redis, rb: redis.Redis
) -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    apps = []
    for store in ("default", "b"):
        app = make_app(two, store=store)
        app.clock = FakeClock(t0 - 30)
        schedule(app, "heavy-minutely", "* * * * *", app.registry["Heavy"], args=[1])
        schedule(app, "light-minutely", "* * * * *", app.registry["light"], args=[2])
        apps.append(app)
    crons = [Cron(app) for app in apps]
    assert [c.tick() for c in crons] == [0, 0]
    for app in apps:
        app.clock.advance(31)  # type: ignore[attr-defined]
    # Each store's process fires its own entry only: one job per entry, none twice.
    assert [c.tick() for c in crons] == [1, 1]
    assert [c.tick() for c in crons] == [0, 0]
    assert [j["class"] for j in queued(r)] == ["light"]
    assert [j["class"] for j in queued(rb)] == ["Heavy"]
    assert set(r.hkeys("conveyor:cron")) == {"light-minutely"}
    assert set(rb.hkeys("conveyor:cron")) == {"heavy-minutely"}
    # An entry written to the wrong store (before the rule existed, by hand) never fires there.
    crons[0].put(crons[1].get("heavy-minutely"))
    for app in apps:
        app.clock.advance(60)  # type: ignore[attr-defined]
    assert [c.tick() for c in crons] == [1, 1]
    assert [j["class"] for j in queued(r)] == ["light", "light"]
    assert [j["class"] for j in queued(rb)] == ["Heavy", "Heavy"]
    for app in apps:
        app.close()


def test_concurrency_limits_count_in_the_store_that_runs_the_job(
    two: Settings, r: redis.Redis, rb: redis.Redis
) -> None:
    app = make_app(two, store="b")

    @app.job(store="b", concurrency_limit=1)
    def limited(n: int) -> None:
        # The slot this run holds, seen from each server.
        slots = (
            rb.zcard("conveyor:limit:limited:running"),
            r.zcard("conveyor:limit:limited:running"),
        )
        rb.rpush("ran:limited", json.dumps([n, *slots]))

    limited.bulk_perform_async([[i] for i in range(3)])
    with running_worker(app):  # deferred jobs resume as slots free (a burst could stop first)
        wait_for(lambda: rb.llen("ran:limited") == 3, 30, "three limited runs")
    runs = sorted(json.loads(x) for x in rb.lrange("ran:limited", 0, -1))
    assert runs == [[0, 1, 0], [1, 1, 0], [2, 1, 0]]
    app.close()


def test_a_store_on_a_sentinel_url(settings: Settings, r: redis.Redis, tmp_path: Path) -> None:
    with sentinel_cluster(tmp_path) as cluster:
        s = settings.replace(stores={"b": cluster.url()}, routing_rules=RULES)
        producer = make_app(s)
        producer.registry["Heavy"].bulk_perform_async([[i] for i in range(10)])
        primary = cluster.node(cluster.primary_port())
        try:
            assert primary.llen("queue:default") == 10 and r.llen("queue:default") == 0
            worker = make_app(s, store="b")
            run_burst(worker)
            assert primary.llen("ran:heavy") == 10
            assert Api(producer).for_store("b").stats().processed == 10
            worker.close()
        finally:
            primary.close()
            producer.close()


def test_a_new_app_reads_no_settings_until_used() -> None:
    # Settings (and the environment) are read on first use, never when an App is made.
    app = App()
    assert app._settings is None
