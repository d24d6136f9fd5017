from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import redis
from support import live_process_holding, running_worker, wait_for

from conveyor import App, ConfigurationError, Job
from conveyor.clock import FakeClock
from conveyor.core.processor import Processor, run_batch_hook
from conveyor.features.concurrency import (
    IDLE_AFTER,
    TEND_INTERVAL,
    ConcurrencyLimitMiddleware,
    resume_deferred,
    spread,
)
from conveyor.redis.limits import DEFERRED, TAKEN, TAKEN_SCARCE, Acquire, LimitStore
from conveyor.settings import Settings


def test_limit_holds_across_threads_and_nothing_is_lost(app: App, r: redis.Redis) -> None:
    app.configure(app.settings.replace(concurrency=8))
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    @app.job(concurrency_limit=2)
    def limited(i: int) -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        r.rpush("order", i)
        time.sleep(0.05)
        with lock:
            state["now"] -= 1

    limited.bulk_perform_async([[i] for i in range(30)])
    with running_worker(app):
        wait_for(lambda: r.llen("order") == 30, timeout=30)
    assert state["peak"] == 2
    order = [int(x) for x in r.lrange("order", 0, -1)]
    assert sorted(order) == list(range(30)), "nothing dropped, nothing twice"
    assert r.get("stat:processed") == "30"
    store = LimitStore(app.store)
    assert store.running("limited") == 0 and store.deferred("limited") == 0


def test_deferred_jobs_resume_oldest_first_as_slots_free(app: App, r: redis.Redis) -> None:
    store = LimitStore(app.store)
    keys = app.store.keys
    me = "host:1:me"
    raws = live_process_holding(app, r, me, 6)
    now = time.time()
    assert store.acquire("c", 2, identity=me, jid="j0", raw=raws[0], now=now)
    assert store.acquire("c", 2, identity=me, jid="j1", raw=raws[1], now=now)
    for i in range(2, 6):
        assert not store.acquire("c", 2, identity=me, jid=f"j{i}", raw=raws[i], now=now)
    assert r.llen(keys.working(me)) == 2, "deferred jobs left the working list atomically"
    # Each freed slot resumes the oldest waiting job onto the consuming end of its queue.
    r.lpush("queue:q", '{"class":"c","args":[],"jid":"other","queue":"q"}')
    assert store.release("c", 2, now, 300, f"{me}|j0") == 1
    assert r.rpop("queue:q") == raws[2]
    r.lpush(keys.working(me), raws[2])
    # A resumed job takes its reserved slot even though others still wait.
    assert store.acquire("c", 2, identity=me, jid="j2", raw=raws[2], now=now)
    assert store.release("c", 2, now, 300, f"{me}|j1") == 1
    assert r.rpop("queue:q") == raws[3]
    assert r.rpop("queue:q") is not None and r.llen("queue:q") == 0
    assert store.deferred("c") == 2


def test_slots_of_a_dead_process_come_back(app: App, r: redis.Redis) -> None:
    @app.job(concurrency_limit=1)
    def solo() -> None: ...

    store = LimitStore(app.store)
    keys = app.store.keys
    # A process that died while holding the only slot, and one job waiting behind it.
    r.zadd(keys.limit_running("solo"), {"gone-host:1:abc|deadjid": time.time()})
    r.lpush(
        keys.limit_deferred("solo"), '{"class":"solo","args":[],"jid":"waiting","queue":"default"}'
    )
    assert resume_deferred(app) == 1, "the dead holder's slot was freed for the waiting job"
    assert r.llen("queue:default") == 1
    assert r.zrange(keys.limit_running("solo"), 0, -1) == ["~|waiting"]  # reserved for it
    assert store.deferred("solo") == 0


def test_live_holders_keep_their_slots(app: App, r: redis.Redis) -> None:
    @app.job(concurrency_limit=1)
    def solo() -> None: ...

    keys = app.store.keys
    r.set(keys.liveness("live-host:1:abc"), "1", px=10_000)
    r.zadd(keys.limit_running("solo"), {"live-host:1:abc|busyjid": time.time()})
    r.lpush(
        keys.limit_deferred("solo"), '{"class":"solo","args":[],"jid":"waiting","queue":"default"}'
    )
    assert resume_deferred(app) == 0
    assert r.llen("queue:default") == 0


def test_bad_limit_is_refused(app: App) -> None:
    @app.job(concurrency_limit=0)
    def zero() -> None: ...

    with pytest.raises(ConfigurationError, match="concurrency_limit=0"):
        from conveyor.features.concurrency import limit_of

        limit_of(zero)


def test_spread_schedules_at_most_n_per_interval(redis_url: str, r: redis.Redis) -> None:
    clock = FakeClock(1_000.0)
    app = App(Settings(redis_url=redis_url), clock=clock)

    @app.job()
    def imp(i: int) -> None: ...

    jids = spread(imp, [[i] for i in range(25)], per_interval=10, interval=60)
    assert len(jids) == 25
    assert r.llen("queue:default") == 10
    scores = [s for _, s in r.zrange("schedule", 0, -1, withscores=True)]
    assert scores.count(1_060.0) == 10 and scores.count(1_120.0) == 5
    with pytest.raises(ConfigurationError):
        spread(imp, [[1]], per_interval=0, interval=60)
    app.close()


def test_per_job_hooks_work_without_a_batch(app: App, r: redis.Redis) -> None:
    """Where no fetched batch runs (a processor used directly), the per-job hooks take and
    free the slot, and defer a job over the limit."""
    from conveyor.core.processor import Processor

    @app.job(concurrency_limit=1)
    def solo(i: int) -> None:
        r.rpush("ran", i)

    keys = app.store.keys
    me = "host:2:direct"
    r.set(keys.liveness(me), "1", px=10_000)
    processor = Processor(app, identity=me)
    _, first = app.client.build(solo, [1], {})
    _, second = app.client.build(solo, [2], {})
    raws = [json.dumps(first), json.dumps(second)]
    r.lpush(keys.working(me), *raws)
    r.zadd(keys.limit_running("solo"), {"other:1:x|busy": time.time()})
    r.set(keys.liveness("other:1:x"), "1", px=10_000)
    outcome = processor.process(processor.fetched("default", raws[0]))
    assert outcome.kind == "gone" and r.llen(keys.limit_deferred("solo")) == 1
    r.zrem(keys.limit_running("solo"), "other:1:x|busy")
    r.delete(keys.limit_deferred("solo"))
    assert processor.process(processor.fetched("default", raws[1])).kind == "ok"
    assert r.lrange("ran", 0, -1) == ["2"]
    assert r.zcard(keys.limit_running("solo")) == 0
    processor.runner.close()


def test_a_full_set_of_slots_held_by_dead_processes_is_pruned_on_acquire(
    app: App, r: redis.Redis
) -> None:
    store = LimitStore(app.store)
    keys = app.store.keys
    r.zadd(keys.limit_running("c"), {"dead:1:a|j1": 1.0, "dead:2:b|j2": 1.0})
    me = "host:1:me"
    r.set(keys.liveness(me), "1", px=10_000)
    r.lpush(keys.working(me), "raw-3")
    assert store.acquire("c", 2, identity=me, jid="j3", raw="raw-3", now=time.time())
    assert r.zrange(keys.limit_running("c"), 0, -1) == [f"{me}|j3"]


def test_the_prefetch_grows_while_a_limit_is_lightly_used_and_stays_at_its_floor_when_it_is_not(
    app: App, r: redis.Redis
) -> None:
    # Slots taken at fetch for jobs held ahead crowd out other processes only once slots are
    # scarce (the last free one was taken): acquire says so, and only then is the prefetch
    # kept at its floor.
    store = LimitStore(app.store)
    me = "host:1:me"
    r.set(app.store.keys.liveness(me), "1", px=10_000)
    got = store.acquire_many(
        [Acquire("c", 10, me, f"j{i}", f"raw-{i}") for i in range(10)], time.time()
    )
    assert got == [TAKEN] * 9 + [TAKEN_SCARCE]  # the last free slot

    @app.job(name="Roomy", concurrency_limit=1000)
    class Roomy(Job):
        def perform(self, i: int) -> None:
            r.incr("roomy")

    @app.job(name="Tight", concurrency_limit=2)
    class Tight(Job):
        def perform(self, i: int) -> None:
            r.incr("tight")

    with running_worker(app) as worker:
        floor = app.settings.concurrency + app.settings.effective_prefetch
        Roomy.bulk_perform_async([[i] for i in range(2000)])
        wait_for(lambda: r.get("roomy") == "2000", 20, "the roomy jobs")
        assert worker.limit > floor  # fast jobs, slots plentiful: it fetched ahead
        grown = worker.limit
        # Scarce slots halve the prefetch once per prefetch's worth of jobs fetched (a few
        # hundred jobs from 100 to the floor), and it does not grow back meanwhile.
        Tight.bulk_perform_async([[i] for i in range(300)])
        wait_for(lambda: r.get("tight") == "300", 30, "the tight jobs")
        assert worker.limit == floor < grown


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_a_lone_process_keeps_its_prefetch_within_a_roomy_limit_and_defers_none_of_its_jobs(
    app: App, r: redis.Redis, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    # Fast jobs grow the prefetch to 100; under a limit of 100 a process at -c 10 holding 110
    # jobs (and its finished ones until their acknowledgement) deferred its own jobs, and
    # the deferrals dropped it to its floor: half the rate of the same job unlimited. It now
    # keeps threads plus prefetch within half the limit.
    app.configure(app.settings.replace(worker_mode=mode, concurrency=10))
    answers: list[int] = []
    acquire_many = LimitStore.acquire_many

    def recording(self: LimitStore, requests: list[Acquire], now: float) -> list[int]:
        got = acquire_many(self, requests, now)
        answers.extend(got)
        return got

    monkeypatch.setattr(LimitStore, "acquire_many", recording)

    if mode == "asyncio":

        @app.job(name="Hundred", concurrency_limit=100)
        async def hundred(i: int) -> None:
            pass

    else:

        @app.job(name="Hundred", concurrency_limit=100)
        def hundred(i: int) -> None:
            pass

    hundred.bulk_perform_async([[i] for i in range(3000)])
    with running_worker(app) as worker:
        wait_for(lambda: r.get("stat:processed") == "3000", 30, "the limited jobs")
        held = worker.limit
    assert DEFERRED not in answers, "the process deferred its own jobs"
    assert held == 10 + 40  # threads plus prefetch: half the limit, never halved
    # A finished job's slot is kept for the next one: slots were taken in Redis for at most
    # the jobs held at once, not for each of the 3,000.
    assert len(answers) <= held
    assert LimitStore(app.store).running("Hundred") == 0, "freed when the worker stopped"


def test_the_limit_holds_in_asyncio_mode_and_nothing_is_lost(app: App, r: redis.Redis) -> None:
    # Asyncio mode takes the slots for a fetched batch in a thread (the loop runs jobs
    # meanwhile) and frees them in the acknowledgement's round trip.
    app.configure(app.settings.replace(worker_mode="asyncio", concurrency=8))
    state = {"now": 0, "peak": 0}

    @app.job(concurrency_limit=2)
    async def limited_async(i: int) -> None:
        state["now"] += 1  # one event loop: no lock
        state["peak"] = max(state["peak"], state["now"])
        r.rpush("order", i)
        await asyncio.sleep(0.02)
        state["now"] -= 1

    limited_async.bulk_perform_async([[i] for i in range(30)])
    with running_worker(app):
        wait_for(lambda: r.llen("order") == 30, timeout=30)
        wait_for(lambda: r.get("stat:processed") == "30", timeout=10)
    assert state["peak"] == 2
    assert sorted(int(x) for x in r.lrange("order", 0, -1)) == list(range(30))
    store = LimitStore(app.store)
    assert store.running("limited_async") == 0 and store.deferred("limited_async") == 0


def _kept_slots_setup(
    redis_url: str, r: redis.Redis
) -> tuple[App, FakeClock, ConcurrencyLimitMiddleware, type[Job]]:
    """A process ("host:1:me") ran two jobs of a class limited to 3, taken as a fetched
    batch: it keeps both slots for its next jobs of the class (had it taken the last free
    one, it would keep none: jobs may wait)."""
    clock = FakeClock(1_000.0)
    app = App(Settings(redis_url=redis_url), clock=clock)

    @app.job(name="Two", concurrency_limit=3)
    def two(i: int) -> None:
        r.rpush("ran", i)

    keys = app.store.keys
    me = "host:1:me"
    r.set(keys.liveness(me), "1", px=60_000)
    processor = Processor(app, identity=me)
    raws = [json.dumps(app.client.build(two, [i], {})[1]) for i in range(2)]
    r.lpush(keys.working(me), *raws)
    units = [processor.fetched("default", raw) for raw in raws]
    run_batch_hook(app, "prepare_batch", units)
    assert [processor.process(u).kind for u in units] == ["ok", "ok"]
    processor.runner.close()
    middleware = next(m for m in app.server_middleware if isinstance(m, ConcurrencyLimitMiddleware))
    assert r.zrange(keys.limit_running("Two"), 0, -1) == [f"{me}|s0", f"{me}|s1"]
    return app, clock, middleware, two


def test_slots_a_process_keeps_unused_go_to_another_process_s_waiting_job(
    redis_url: str, r: redis.Redis
) -> None:
    app, clock, middleware, two = _kept_slots_setup(redis_url, r)
    keys = app.store.keys
    assert middleware.tend() == 0
    assert r.zcard(keys.limit_running("Two")) == 2, "kept: the class is busy, no job waits"
    # Another process takes the last free slot; its next job meets the kept slots and is
    # deferred; the next tend (every TEND_INTERVAL) frees them, and the waiting job is
    # resumed onto its queue.
    other = "host:2:other"
    r.set(keys.liveness(other), "1", px=60_000)
    jobs = [app.client.build(two, [i], {})[1] for i in (8, 9)]
    raws = [json.dumps(job) for job in jobs]
    r.lpush(keys.working(other), *raws)
    store = LimitStore(app.store)
    got = [
        store.acquire("Two", 3, identity=other, jid=job["jid"], raw=raw, now=1_000.0)
        for job, raw in zip(jobs, raws, strict=True)
    ]
    assert got == [True, False]
    clock.advance(TEND_INTERVAL)
    assert middleware.tend() == 1
    assert r.lrange("queue:default", 0, -1) == [raws[1]]
    running = [f"{other}|{jobs[0]['jid']}", f"~|{jobs[1]['jid']}"]
    assert sorted(r.zrange(keys.limit_running("Two"), 0, -1)) == sorted(running)
    app.close()


def test_slots_a_process_keeps_unused_are_freed_once_it_takes_none_for_a_while(
    redis_url: str, r: redis.Redis
) -> None:
    app, clock, middleware, _ = _kept_slots_setup(redis_url, r)
    keys = app.store.keys
    clock.advance(IDLE_AFTER - 0.01)
    middleware.tend()
    assert r.zcard(keys.limit_running("Two")) == 2
    clock.advance(0.02)
    middleware.tend()
    assert r.zcard(keys.limit_running("Two")) == 0
    app.close()


def test_slots_kept_unused_whose_freeing_fails_are_kept_and_freed_by_a_later_tend(
    redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slots taken out of the pools to be freed must not be forgotten when Redis fails the
    # call: the process lives on, so nothing else would ever free them.
    app, clock, middleware, _ = _kept_slots_setup(redis_url, r)
    keys = app.store.keys
    clock.advance(IDLE_AFTER)
    tend = LimitStore.tend

    def failing(self: LimitStore, *args: object, **kwargs: object) -> object:
        raise redis.ConnectionError("the reply was lost")

    monkeypatch.setattr(LimitStore, "tend", failing)
    with pytest.raises(redis.ConnectionError):
        middleware.tend()
    monkeypatch.setattr(LimitStore, "tend", tend)
    assert r.zcard(keys.limit_running("Two")) == 2
    middleware.tend()
    assert r.zcard(keys.limit_running("Two")) == 0
    app.close()
