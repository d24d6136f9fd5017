from __future__ import annotations

import asyncio
import json
import threading
import time

import redis
from support import run_burst, running_worker, wait_for

from conveyor import App, Job
from conveyor.core.middleware import JobContext, ServerMiddleware
from conveyor.core.pace import MIN_ACTIVE
from conveyor.core.retry import decompress_backtrace


def test_jobs_run_and_are_acknowledged(app: App, r: redis.Redis) -> None:
    @app.job()
    def record(i: int) -> None:
        r.sadd("ran", i)

    record.bulk_perform_async([[i] for i in range(300)])
    worker = run_burst(app)
    assert r.smembers("ran") == {str(i) for i in range(300)}
    assert r.get("stat:processed") == "300" and r.get("stat:failed") is None
    assert worker.counters.processed == 300
    assert r.llen(app.store.keys.working(worker.identity)) == 0
    day = time.strftime("%Y-%m-%d", time.gmtime())
    assert r.get(f"stat:processed:{day}") == "300"
    assert r.sismember("processes", worker.identity) == 0  # unregistered on shutdown


def test_failed_job_goes_to_retry_with_sidekiq_fields(app: App, r: redis.Redis) -> None:
    @app.job(backtrace=True)
    def fails(x: int) -> None:
        raise KeyError(f"missing {x}")

    before = time.time()
    jid = fails.perform_async(1).jid
    run_burst(app)
    entries = r.zrange("retry", 0, -1, withscores=True)
    assert len(entries) == 1
    job = json.loads(entries[0][0])
    assert job["jid"] == jid and job["retry_count"] == 0 and job["error_class"] == "KeyError"
    assert job["error_message"] == "'missing 1'" and job["failed_at"] >= before
    assert any("in `fails'" in line for line in decompress_backtrace(job["error_backtrace"]))
    assert before + 15 <= entries[0][1] <= time.time() + 25
    assert r.get("stat:failed") == "1"


def test_retry_zero_goes_to_dead_and_dead_set_is_capped(app: App, r: redis.Redis) -> None:
    now = time.time()
    old = now - 200 * 24 * 3600  # older than the 180-day limit
    pipe = r.pipeline()
    pipe.zadd("dead", {json.dumps({"class": "Old", "args": [], "jid": "old"}): old})
    for i in range(10_000):
        pipe.zadd(
            "dead", {json.dumps({"class": "Filler", "args": [i], "jid": str(i)}): now - 10_000 + i}
        )
    pipe.execute()

    @app.job(retry=0)
    def doomed() -> None:
        raise RuntimeError("no")

    jid = doomed.perform_async().jid
    run_burst(app)
    assert r.zcard("dead") == 10_000
    newest = json.loads(r.zrange("dead", -1, -1)[0])
    assert newest["jid"] == jid and newest["error_class"] == "RuntimeError"
    jids = {json.loads(m)["jid"] for m in r.zrange("dead", 0, -1)}
    assert "old" not in jids and "0" not in jids and "1" in jids


def test_unknown_class_is_retried_not_dropped(app: App, r: redis.Redis) -> None:
    app.enqueue("FromTheFuture", 1, retry=False)
    run_burst(app)
    [raw] = r.zrange("retry", 0, -1)
    job = json.loads(raw)
    assert job["class"] == "FromTheFuture"
    assert job["error_class"] == "conveyor.errors.UnknownJobClassError"
    assert "newer deploy" in job["error_message"]


def test_malformed_payload_goes_to_dead_and_worker_keeps_running(app: App, r: redis.Redis) -> None:
    @app.job()
    def fine(i: int) -> None:
        r.sadd("fine", i)

    fine.perform_async(1)
    r.lpush("queue:default", "{this is not json", '{"args": [1]}')
    fine.perform_async(2)
    run_burst(app)
    assert r.smembers("fine") == {"1", "2"}
    dead = [json.loads(m) for m in r.zrange("dead", 0, -1)]
    assert len(dead) == 2
    assert {d["error_class"] for d in dead} == {"conveyor.errors.PayloadError"}
    assert any(d["args"] == ["{this is not json"] for d in dead)
    assert any("lacks required field(s) class" in d["error_message"] for d in dead)


def test_async_jobs_and_timeouts(app: App, r: redis.Redis) -> None:
    @app.job()
    async def fetch(i: int) -> None:
        await asyncio.sleep(0.01)
        r.sadd("async", i)

    @app.job(timeout=0.2)
    def slow() -> None:
        time.sleep(0.01)
        while True:
            time.sleep(0.01)

    @app.job(timeout=0.2)
    async def slow_async() -> None:
        await asyncio.sleep(30)

    fetch.bulk_perform_async([[i] for i in range(20)])
    slow.perform_async()
    slow_async.perform_async()
    run_burst(app)
    assert r.scard("async") == 20
    failures = [json.loads(m) for m in r.zrange("retry", 0, -1)]
    assert sorted(f["class"] for f in failures) == ["slow", "slow_async"]
    assert {f["error_class"] for f in failures} == {"conveyor.errors.JobTimeoutError"}


def test_strict_queue_order(app: App, r: redis.Redis) -> None:
    app.configure(
        app.settings.replace(queues="high low", strict_order=True, concurrency=1, prefetch=0)
    )

    @app.job()
    def note(q: str) -> None:
        r.rpush("order", q)

    for _ in range(5):
        note.set(queue="low").perform_async("low")
        note.set(queue="high").perform_async("high")
    run_burst(app)
    assert r.lrange("order", 0, -1) == ["high"] * 5 + ["low"] * 5


def test_server_middleware_wraps_perform(app: App, r: redis.Redis) -> None:
    seen: list[str] = []

    class Outer(ServerMiddleware):
        def before_perform(self, ctx: JobContext) -> None:
            seen.append(f"outer.before:{ctx.job['args'][0]}")
            if ctx.job["args"][0] == "skip":
                ctx.skip("told to")

        def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
            seen.append(f"outer.after:{type(error).__name__ if error else None}")

    class Inner(ServerMiddleware):
        def before_perform(self, ctx: JobContext) -> None:
            seen.append("inner.before")

        def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
            seen.append("inner.after")

    app.server_middleware.add(Outer())
    app.server_middleware.add(Inner())

    @app.job(retry=False)
    def work(mode: str) -> None:
        seen.append("perform")
        if mode == "fail":
            raise ValueError

    app.configure(app.settings.replace(concurrency=1, prefetch=0))
    for mode in ("ok", "skip", "fail"):
        work.perform_async(mode)
    run_burst(app)
    assert seen == [
        "outer.before:ok",
        "inner.before",
        "perform",
        "inner.after",
        "outer.after:None",
        "outer.before:skip",
        "outer.after:None",
        "outer.before:fail",
        "inner.before",
        "perform",
        "inner.after",
        "outer.after:ValueError",
    ]


def test_heartbeat_shows_busy_work_and_redis_signals_quiet_then_stop(
    app: App, r: redis.Redis
) -> None:
    release = threading.Event()

    @app.job(name="Blocker")
    class Blocker(Job):
        def perform(self, n: int) -> None:
            release.wait(10)
            r.sadd("released", n)

    with running_worker(app) as worker:
        Blocker.perform_async(1)
        key = worker.identity
        wait_for(lambda: r.hget(key, "busy") == "1", timeout=5)
        info = json.loads(r.hget(key, "info") or "")
        assert (
            info["identity"] == key and info["concurrency"] == 4 and info["queues"] == ["default"]
        )
        assert r.ttl(key) > 50 and float(r.hget(key, "beat") or 0) > time.time() - 5
        [work] = r.hvals(f"{key}:work")
        assert json.loads(json.loads(work)["payload"])["class"] == "Blocker"
        assert r.hvals(f"{key}:workers") == [work]  # Sidekiq 6's name for the same hash

        app.store.send_signal(key, "TSTP")
        wait_for(lambda: r.hget(key, "quiet") == "true", timeout=5)
        Blocker.perform_async(2)  # quiet: not fetched
        time.sleep(0.3)
        assert r.llen("queue:default") == 1
        release.set()
        wait_for(lambda: r.sismember("released", 1), timeout=5)
        app.store.send_signal(key, "TERM")
        assert worker.wait(10), "TERM through Redis did not stop the worker"
    assert r.llen("queue:default") == 1 and r.sismember("processes", key) == 0


def test_graceful_stop_requeues_jobs_past_the_deadline(app: App, r: redis.Redis) -> None:
    app.configure(app.settings.replace(shutdown_timeout=0.5, concurrency=2, prefetch=3))
    started = threading.Event()

    @app.job()
    def stuck(i: int) -> None:
        started.set()
        time.sleep(3)
        r.sadd("stuck-done", i)

    stuck.bulk_perform_async([[i] for i in range(5)])
    with running_worker(app) as worker:
        assert started.wait(5)
        wait_for(lambda: worker.busy == 2, timeout=5)
    # Two were running past the deadline, three were prefetched: all five are back.
    assert r.llen("queue:default") == 5
    assert r.llen(app.store.keys.working(worker.identity)) == 0
    assert worker.counters.requeued == 5


def test_key_prefix_keeps_apps_apart(app: App, r: redis.Redis) -> None:
    app.configure(app.settings.replace(key_prefix="shop"))

    @app.job()
    def f(i: int) -> None:
        r.sadd("ran", i)

    f.perform_async(1)
    f.perform_in(0.01, 2)
    assert set(r.keys("*")) == {"shop:queue:default", "shop:queues", "shop:schedule"}
    time.sleep(0.05)
    with running_worker(app):
        wait_for(lambda: r.scard("ran") == 2, timeout=10)
    assert r.get("shop:stat:processed") == "2"
    assert not r.exists("stat:processed")
    assert all(k.startswith("shop:") for k in r.keys("*") if k != "ran")


def test_a_stopped_worker_stays_unregistered(app: App, r: redis.Redis) -> None:
    app.configure(app.settings.replace(heartbeat_interval=0.05, liveness_ttl=1.0))
    with running_worker(app) as worker:
        wait_for(lambda: r.sismember("processes", worker.identity), timeout=5)
        time.sleep(0.2)  # several heartbeats
    time.sleep(0.3)  # a heartbeat racing the shutdown would have re-registered it by now
    assert not r.sismember("processes", worker.identity)
    assert not r.exists(worker.identity)
    assert not r.exists(app.store.keys.liveness(worker.identity))


def test_a_gated_queue_is_not_fetched_until_its_gate_opens(app: App, r: redis.Redis) -> None:
    app.configure(app.settings.replace(queues="tasks other"))
    is_open = threading.Event()
    app.gate_queue("tasks", is_open.is_set)

    @app.job()
    def note(q: str) -> None:
        r.rpush("ran", q)

    with running_worker(app):
        note.set(queue="tasks").perform_async("tasks")
        note.set(queue="other").perform_async("other")
        wait_for(lambda: r.lrange("ran", 0, -1) == ["other"])
        time.sleep(0.5)  # the gate is shut: the tasks job stays queued, not lost
        assert r.lrange("ran", 0, -1) == ["other"]
        assert r.llen("queue:tasks") == 1
        is_open.set()
        wait_for(lambda: r.lrange("ran", 0, -1) == ["other", "tasks"])


def test_a_worker_whose_queues_are_all_gated_waits_and_a_failing_gate_counts_as_open(
    app: App, r: redis.Redis
) -> None:
    app.configure(app.settings.replace(queues="tasks"))
    calls: list[int] = []

    def broken() -> bool:
        calls.append(1)
        raise RuntimeError("gate bug")

    app.gate_queue("tasks", lambda: False)

    @app.job()
    def note() -> None:
        r.incr("ran")

    with running_worker(app):
        note.set(queue="tasks").perform_async()
        time.sleep(0.6)
        assert r.get("ran") is None
        app.gate_queue("tasks", broken)
        wait_for(lambda: r.get("ran") == "1")
    assert calls


def test_prefetched_jobs_that_turn_slow_are_handed_back_to_other_processes(
    app: App, r: redis.Redis
) -> None:
    """Fast jobs grow the default prefetch (to 100 at -c 1); when the jobs then turn slow, the
    jobs beyond the new prefetch go back to the queue, where an idle process takes them,
    instead of waiting behind this process's one thread."""
    app.configure(app.settings.replace(concurrency=1))

    @app.job()
    def quick() -> None:
        r.incr("quick")

    @app.job()
    def slow(i: int) -> None:
        time.sleep(0.1)
        r.rpush("slow", i)

    quick.bulk_perform_async([[]] * 300)
    with running_worker(app) as first:
        wait_for(lambda: r.get("quick") == "300", 20, "the quick jobs")
        slow.bulk_perform_async([[i] for i in range(30)])
        wait_for(lambda: r.llen(app.store.keys.queue("default")) == 0, 10, "the first to fetch")
        with running_worker(app) as second:
            wait_for(lambda: r.llen("slow") == 30, 20, "the slow jobs")
    assert sorted(int(i) for i in r.lrange("slow", 0, -1)) == list(range(30)), "each once"
    assert first.counters.processed + second.counters.processed == 330
    assert second.counters.processed >= 5, "the second process got a share of the slow jobs"


def test_threads_parked_after_short_jobs_all_run_jobs_that_block(app: App, r: redis.Redis) -> None:
    # After short jobs kept the process busy, threads beyond the cap park (core/pace.py);
    # jobs that then wait on I/O must get every thread back, not queue behind two of them.
    lock = threading.Lock()
    running, most = [0], [0]

    @app.job(name="Quick")
    class Quick(Job):
        def perform(self, i: int) -> None:
            r.incr("quick")

    @app.job(name="Blocks")
    class Blocks(Job):
        def perform(self, i: int) -> None:
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.3)
            with lock:
                running[0] -= 1

    app.configure(app.settings.replace(concurrency=8))
    with running_worker(app) as worker:
        pace = worker.pace  # type: ignore[union-attr]
        concurrency = app.settings.concurrency
        assert pace.enabled and concurrency > MIN_ACTIVE
        pace.cap = MIN_ACTIVE  # as after a busy spell of short jobs
        Quick.bulk_perform_async([[i] for i in range(200)])
        wait_for(lambda: r.get("quick") == "200", 10, "the quick jobs")
        wait_for(lambda: pace.active == MIN_ACTIVE, 5, "the threads beyond the cap to park")
        Blocks.bulk_perform_async([[i] for i in range(concurrency * 2)])
        wait_for(lambda: most[0] == concurrency, 5, "every thread running a blocked job")
