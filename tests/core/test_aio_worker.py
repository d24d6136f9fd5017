"""The asyncio worker (conveyor/core/aio_worker.py): the same lists, scripts and outcomes as the
threaded worker, with ``async def`` jobs on one event loop; real Redis, real processes."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time

import pytest
import redis
import redis.asyncio
from support import APPS, StartProcess, run_burst, running_worker, wait_for

from conveyor import App, Job, Settings
from conveyor.core.middleware import JobContext, ServerMiddleware
from conveyor.core.recovery import sweep

APP = str(APPS / "aio_crash_app.py")


def asyncio_app(app: App, **changes: object) -> App:
    app.configure(app.settings.replace(worker_mode="asyncio", **changes))
    return app


def test_async_jobs_run_on_the_loop_and_are_acknowledged(
    app: App, r: redis.Redis, redis_url: str
) -> None:
    asyncio_app(app, concurrency=5)
    threads: set[str] = set()
    running_now = [0, 0]  # now, most at once

    @app.job()
    async def record(i: int) -> None:
        threads.add(threading.current_thread().name)
        running_now[0] += 1
        running_now[1] = max(running_now[1], running_now[0])
        client = redis.asyncio.Redis.from_url(redis_url)
        await client.sadd("ran", i)
        await asyncio.sleep(0.01)
        await client.aclose()
        running_now[0] -= 1

    record.bulk_perform_async([[i] for i in range(200)])
    worker = run_burst(app)
    assert r.smembers("ran") == {str(i) for i in range(200)}
    assert r.get("stat:processed") == "200" and r.get("stat:failed") is None
    assert worker.counters.processed == 200
    assert r.llen(app.store.keys.working(worker.identity)) == 0
    assert r.sismember("processes", worker.identity) == 0  # unregistered on shutdown
    # No thread hop: every job ran on the one thread running the worker's loop (in threads
    # mode they would run on "conveyor-asyncio"), five at a time.
    assert len(threads) == 1 and not next(iter(threads)).startswith("conveyor-")
    assert running_now[1] == 5


def test_sync_jobs_run_in_threads_beside_async_ones(app: App, r: redis.Redis) -> None:
    asyncio_app(app, concurrency=3)
    names: set[str] = set()

    @app.job()
    def blocking(i: int) -> None:
        names.add(threading.current_thread().name)
        time.sleep(0.01)
        r.sadd("sync", i)

    @app.job()
    async def cooperative(i: int) -> None:
        r.sadd("async", i)

    blocking.bulk_perform_async([[i] for i in range(20)])
    cooperative.bulk_perform_async([[i] for i in range(20)])
    run_burst(app)
    assert r.scard("sync") == 20 and r.scard("async") == 20
    assert names and all(n == "conveyor-sync" for n in names)
    assert r.get("stat:processed") == "40"


def test_failures_timeouts_unknown_and_malformed_jobs_have_the_threaded_outcomes(
    app: App, r: redis.Redis
) -> None:
    asyncio_app(app)

    @app.job(backtrace=True)
    async def fails(x: int) -> None:
        raise KeyError(f"missing {x}")

    @app.job(timeout=0.2)
    async def slow_async() -> None:
        await asyncio.sleep(30)

    @app.job(timeout=5)
    async def raises_timeout_itself() -> None:
        raise TimeoutError("the job's own timeout")

    @app.job(retry=0)
    async def doomed() -> None:
        raise RuntimeError("no")

    fails.perform_async(1)
    slow_async.perform_async()
    raises_timeout_itself.perform_async()
    doomed_jid = doomed.perform_async().jid
    app.enqueue("FromTheFuture", 1, retry=False)
    r.lpush("queue:default", "{this is not json")
    run_burst(app)
    retries = {json.loads(m)["class"]: json.loads(m) for m in r.zrange("retry", 0, -1)}
    assert set(retries) == {"fails", "slow_async", "raises_timeout_itself", "FromTheFuture"}
    assert retries["fails"]["error_class"] == "KeyError"
    assert retries["fails"]["error_message"] == "'missing 1'"
    assert retries["slow_async"]["error_class"] == "conveyor.errors.JobTimeoutError"
    assert retries["raises_timeout_itself"]["error_class"] == "TimeoutError"
    assert retries["FromTheFuture"]["error_class"] == "conveyor.errors.UnknownJobClassError"
    dead = [json.loads(m) for m in r.zrange("dead", 0, -1)]
    assert {d.get("jid") for d in dead if d["class"] == "doomed"} == {doomed_jid}
    assert any(d["error_class"] == "conveyor.errors.PayloadError" for d in dead)
    assert r.get("stat:processed") == "6" and r.get("stat:failed") == "6"


def test_server_middleware_wraps_the_awaited_perform(app: App, r: redis.Redis) -> None:
    asyncio_app(app)
    events: list[str] = []

    class Outer(ServerMiddleware):
        def before_perform(self, ctx: JobContext) -> None:
            events.append("outer.before")

        def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
            events.append(f"outer.after:{type(error).__name__ if error else None}")

    class Skipper(ServerMiddleware):
        def before_perform(self, ctx: JobContext) -> None:
            if ctx.job["args"] == [2]:
                ctx.skip("not this one")

    app.server_middleware.add(Outer())
    app.server_middleware.add(Skipper())

    @app.job()
    async def wrapped(n: int) -> None:
        events.append(f"perform:{n}")
        if n == 3:
            raise ValueError("boom")

    for n in (1, 2, 3):
        wrapped.perform_async(n)
        run_burst(app)
    assert events == [
        "outer.before",
        "perform:1",
        "outer.after:None",
        "outer.before",
        "outer.after:None",
        "outer.before",
        "perform:3",
        "outer.after:ValueError",
    ]
    assert r.zcard("retry") == 1 and r.get("stat:processed") == "3"


def test_heartbeat_shows_busy_slots_and_redis_signals_quiet_then_stop(
    app: App, r: redis.Redis
) -> None:
    asyncio_app(app)

    @app.job(name="Blocker")
    class Blocker(Job):
        async def perform(self, n: int) -> None:
            side = redis.asyncio.Redis.from_url(str(type(self).app.settings.redis_url))
            while not await side.exists("release"):
                await asyncio.sleep(0.02)
            await side.sadd("released", n)
            await side.aclose()

    with running_worker(app) as worker:
        Blocker.perform_async(1)
        key = worker.identity
        wait_for(lambda: r.hget(key, "busy") == "1", timeout=5)
        info = json.loads(r.hget(key, "info") or "")
        assert info["identity"] == key and info["concurrency"] == 4
        [work] = r.hvals(f"{key}:work")
        assert json.loads(json.loads(work)["payload"])["class"] == "Blocker"
        assert r.exists(app.store.keys.liveness(key))

        app.store.send_signal(key, "TSTP")
        wait_for(lambda: r.hget(key, "quiet") == "true", timeout=5)
        Blocker.perform_async(2)  # quiet: not fetched
        time.sleep(0.3)
        assert r.llen("queue:default") == 1
        r.set("release", 1)
        wait_for(lambda: r.sismember("released", 1), timeout=5)
        app.store.send_signal(key, "TERM")
        assert worker.wait(10), "TERM through Redis did not stop the worker"
    assert r.llen("queue:default") == 1 and r.sismember("processes", key) == 0
    assert r.get("stat:processed") == "1"


def test_graceful_stop_requeues_running_and_prefetched_jobs_at_the_deadline(
    app: App, r: redis.Redis
) -> None:
    asyncio_app(app, shutdown_timeout=0.5, concurrency=2, prefetch=3)
    started = threading.Event()

    @app.job()
    async def stuck(i: int) -> None:
        started.set()
        await asyncio.sleep(30)
        r.sadd("stuck-done", i)

    stuck.bulk_perform_async([[i] for i in range(5)])
    with running_worker(app) as worker:
        assert started.wait(5)
        wait_for(lambda: worker.busy == 2, timeout=5)
    # Two were running past the deadline, three were prefetched: all five are back, in order.
    assert r.llen("queue:default") == 5
    assert r.llen(app.store.keys.working(worker.identity)) == 0
    assert worker.counters.requeued == 5
    assert r.scard("stuck-done") == 0 and r.get("stat:processed") is None


def test_fast_jobs_are_prefetched_in_batches_and_given_back_when_jobs_turn_slow(
    app: App, r: redis.Redis
) -> None:
    asyncio_app(app, concurrency=1)

    @app.job()
    async def quick(i: int) -> None:
        pass

    @app.job()
    async def slow(i: int) -> None:
        r.rpush("slow-started", i)
        await asyncio.sleep(0.5)

    quick.bulk_perform_async([[i] for i in range(300)])
    slow.bulk_perform_async([[i] for i in range(60)])
    with running_worker(app) as worker:
        working = app.store.keys.working(worker.identity)
        wait_for(lambda: r.llen("slow-started") == 1, timeout=10)
        # Fast jobs made the worker fetch far beyond its one slot and one default prefetch...
        assert r.llen(working) > 10 and r.llen("queue:default") < 50
        # ...and once the first slow job has shown how long they take, the slow jobs nobody
        # started go back to the queue for other processes, without waiting for a quiet.
        wait_for(lambda: r.llen("queue:default") >= 50, timeout=10)
        assert worker.limit < 10 and r.llen(working) <= worker.limit


def crash_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "CONVEYOR_REDIS_URL": redis_url,
        "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
        "CONVEYOR_LIVENESS_TTL": "2",
        "CONVEYOR_RECOVERY_INTERVAL": "0.5",
        **extra,
    }


def starts(r: redis.Redis) -> list[tuple[int, int]]:
    return [(int(i), int(pid)) for i, pid, _ in (e.split(":") for e in r.lrange("starts", 0, -1))]


@pytest.mark.timeout(90)
def test_a_sigkilled_asyncio_worker_loses_no_job(
    r: redis.Redis, redis_url: str, processes: StartProcess
) -> None:
    app = App(Settings(redis_url=redis_url))
    for i in range(40):
        app.enqueue("Sleepy", i, 1.0)
    app.close()
    victim = processes(APP, **crash_env(redis_url, CONVEYOR_CONCURRENCY="10"))
    wait_for(lambda: len(starts(r)) >= 10, timeout=20)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(5) == -signal.SIGKILL
    in_flight = {i for i, pid in starts(r) if pid == victim.pid}
    assert len(in_flight) >= 10
    assert not r.hgetall("completions").keys() & {str(i) for i in in_flight}

    r.set("fast", 1)
    survivor = processes(APP, **crash_env(redis_url, CONVEYOR_CONCURRENCY="10"))
    wait_for(lambda: len(r.hgetall("completions")) == 40, timeout=60, interval=0.2)
    assert {int(k): int(v) for k, v in r.hgetall("completions").items()} == {
        i: 1 for i in range(40)
    }, "every job completed exactly once"
    reruns = {i for i, pid in starts(r) if pid == survivor.pid and i in in_flight}
    assert reruns == in_flight, "every interrupted job ran again on the survivor"
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    assert r.keys("working:*") == [] or all(r.llen(k) == 0 for k in r.keys("working:*"))


@pytest.mark.timeout(60)
def test_sigterm_finishes_short_jobs_and_requeues_long_ones(
    r: redis.Redis, redis_url: str, processes: StartProcess
) -> None:
    app = App(Settings(redis_url=redis_url))
    for i, seconds in ((0, 0.3), (1, 0.3), (2, 60.0), (3, 60.0)):
        app.enqueue("Sleepy", i, seconds)
    app.close()
    worker = processes(
        APP, **crash_env(redis_url, CONVEYOR_CONCURRENCY="4", CONVEYOR_SHUTDOWN_TIMEOUT="2")
    )
    wait_for(lambda: len(starts(r)) == 4, timeout=20)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert r.hgetall("completions") == {"0": "1", "1": "1"}
    assert sorted(json.loads(raw)["args"][0] for raw in r.lrange("queue:default", 0, -1)) == [2, 3]
    assert r.get("stat:processed") == "2" and r.scard("processes") == 0


def test_poison_payloads_are_quarantined_and_the_loop_carries_on(app: App, r: redis.Redis) -> None:
    """A payload that is not UTF-8, one that is not JSON and one nested too deep go to the dead
    set with a reason; the asyncio worker keeps fetching and runs the good job after them."""
    asyncio_app(app)
    ran: list[int] = []

    @app.job
    async def good(n: int) -> None:
        ran.append(n)

    raw = redis.Redis.from_url(app.settings.redis_url or "")
    raw.lpush("queue:default", b"\xff\xfenot utf-8", b"{not json", b"[" * 5000 + b"]" * 5000)
    raw.close()
    good.perform_async(7)
    run_burst(app)
    assert ran == [7]
    assert r.zcard("dead") == 3
    assert not [k for k in r.scan_iter("conveyor:working:*") if r.llen(k)], "nothing stranded"

    reasons = " ".join(
        json.loads(entry).get("error_message", "") for entry in r.zrange("dead", 0, -1)
    )
    assert "UTF-8" in reasons or "utf-8" in reasons


def test_a_suspect_runs_alone_after_a_publication_names_the_jobs_behind_it(
    app: App, r: redis.Redis
) -> None:
    # A job interrupted before may be what kills the process: it starts once nothing else
    # runs, with Redis told which jobs behind it had not started, and nothing starts beside it.
    asyncio_app(app, concurrency=4)
    events: list[tuple[str, str]] = []
    seen: dict[str, str | None] = {}

    @app.job(name="Rec")
    async def rec(name: str) -> None:
        events.append(("start", name))
        if name == "S":
            seen["boundary"] = r.get(app.store.keys.boundary(worker.identity))
            await asyncio.sleep(0.3)
        else:
            await asyncio.sleep(0.01)
        events.append(("end", name))

    def payload(name: str, interrupted: int = 0) -> str:
        job = {"class": "Rec", "args": [name], "jid": f"jid{name}", "queue": "default"}
        job.update({"retry": True, "created_at": time.time(), "enqueued_at": time.time()})
        if interrupted:
            job["interrupted_count"] = interrupted
        return json.dumps(job)

    names = [f"n{i}" for i in range(6)] + ["S"] + [f"m{i}" for i in range(6)]
    r.rpush("queue:default", *[payload(n, 1 if n == "S" else 0) for n in reversed(names)])
    r.sadd("queues", "default")
    with running_worker(app) as worker:
        wait_for(lambda: len(events) == 2 * len(names), 10, "every job")
    i, j = events.index(("start", "S")), events.index(("end", "S"))
    assert events[i + 1] == ("end", "S"), "nothing started beside the suspect"
    assert all(events.count(("end", n)) == 1 for n in names[:6])
    assert all(events.index(("end", n)) < i for n in names[:6]), "it started once all else ended"
    assert all(events.index(("start", n)) > j for n in names[7:]), "the jobs behind it waited"
    assert seen["boundary"] is not None and json.loads(seen["boundary"])["jid"] == "jidm0"
    assert r.get(app.store.keys.boundary(worker.identity)) is None, "withdrawn after it"


def test_stopping_while_a_suspect_runs_gives_back_the_jobs_waiting_behind_it(
    app: App, r: redis.Redis
) -> None:
    asyncio_app(app, concurrency=3, shutdown_timeout=1.0)
    ran: list[str] = []
    started = threading.Event()

    @app.job(name="Rec")
    async def rec(name: str) -> None:
        if name == "S":
            started.set()
            await asyncio.sleep(30)  # past the deadline: requeued
        ran.append(name)

    jobs = [
        json.dumps(
            {
                "class": "Rec",
                "args": [n],
                "jid": f"jid{n}",
                "queue": "default",
                "retry": True,
                "interrupted_count": 1 if n == "S" else 0,
            }
        )
        for n in ["S", "a", "b", "c", "d"]
    ]
    r.rpush("queue:default", *reversed(jobs))
    r.sadd("queues", "default")
    with running_worker(app):
        assert started.wait(10)
        time.sleep(0.2)
    assert ran == [], "nothing started beside the suspect"
    back = sorted(json.loads(p)["args"][0] for p in r.lrange("queue:default", 0, -1))
    assert back == ["S", "a", "b", "c", "d"], "every job is back in its queue"
    assert all(r.llen(k) == 0 for k in r.keys("conveyor:working:*"))


@pytest.mark.timeout(60)
def test_a_crash_counts_an_interruption_only_for_the_jobs_that_had_started(
    r: redis.Redis, redis_url: str, processes: StartProcess
) -> None:
    # Two slots run two long jobs; the two prefetched behind them are named in Redis as not
    # started (the start boundary), so recovery sends them back without an interruption.
    app = App(Settings(redis_url=redis_url))
    for i in range(4):
        app.enqueue("Sleepy", i, 60.0)
    victim = processes(APP, **crash_env(redis_url, CONVEYOR_CONCURRENCY="2"))
    wait_for(lambda: len(starts(r)) == 2, timeout=20)
    started = {i for i, _ in starts(r)}
    first_waiting = min(set(range(4)) - started)
    wait_for(
        lambda: any(f'"args":[{first_waiting},' in (r.get(k) or "") for k in r.keys("*boundary*")),
        timeout=10,
        what="the start boundary",
    )
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(5) == -signal.SIGKILL
    wait_for(lambda: not r.keys("conveyor:alive:*"), timeout=10, what="the liveness TTL")
    report = sweep(app)
    app.close()
    back = {json.loads(p)["args"][0]: json.loads(p) for p in r.lrange("queue:default", 0, -1)}
    assert sorted(back) == [0, 1, 2, 3] and report.unstarted == 2
    assert {i: job.get("interrupted_count", 0) for i, job in back.items()} == {
        i: (1 if i in started else 0) for i in range(4)
    }
