"""Issue #14's table, row by row, fed to a real worker on a real Redis: each poison input or
fault, and what must happen instead of a dead thread or a stranded job.

In-process workers here (the faults are in the data); tests/system/test_faults.py has the
ones that need real processes, signals, a proxy and a Redis restart."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from support import run_burst, running_worker, wait_for

from conveyor import App, Job, Worker
from conveyor.core.middleware import FetchedJob, ServerMiddleware
from conveyor.core.payload import dumps
from conveyor.core.recovery import sweep
from conveyor.core.worker import EXIT_UNHEALTHY

BAD_UTF8 = b'{"class":"Record","args":[0,"caf\xe9 \xff"],"jid":"badutf8"}'


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A client that writes bytes as they are (no UTF-8 encoding)."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def record_job(app: App, r: redis.Redis) -> type[Job]:
    @app.job(name="Record")
    class Record(Job):
        def perform(self, i: int, *rest: object) -> None:
            r.sadd("ran", i)

    return Record


def dead(r: redis.Redis) -> list[dict[str, object]]:
    return [json.loads(m) for m in r.zrange("dead", 0, -1)]


def working_empty(app: App, r: redis.Redis) -> bool:
    keys = r.keys(app.store.keys.working("*"))
    return all(r.llen(k) == 0 for k in keys)


def test_row1_invalid_utf8_in_a_queue_is_quarantined_and_fetching_goes_on(
    app: App, r: redis.Redis, raw: redis.Redis
) -> None:
    record = record_job(app, r)
    record.bulk_perform_async([[i] for i in range(1, 51)])
    raw.lpush("queue:default", BAD_UTF8)
    record.bulk_perform_async([[i] for i in range(51, 101)])
    with running_worker(app) as worker:
        wait_for(lambda: r.scard("ran") == 100, timeout=20)
        record.perform_async(101)  # the fetcher is still alive
        wait_for(lambda: r.scard("ran") == 101, timeout=10)
        assert worker.health.loops["fetch"].errors == 0
    [entry] = dead(r)
    assert entry["jid"] != "badutf8" and "not valid UTF-8" in str(entry["error_message"])
    assert base64.b64decode(str(entry["raw_base64"])) == BAD_UTF8  # every byte kept
    assert working_empty(app, r)


@pytest.mark.parametrize("zset", ["schedule", "retry"])
def test_row2_nan_infinity_1e999_in_a_sorted_set_are_quarantined_and_housekeeping_goes_on(
    app: App, r: redis.Redis, zset: str
) -> None:
    record = record_job(app, r)
    due = time.time() - 1
    for n, number in enumerate(["NaN", "Infinity", "1e999"]):
        r.zadd(zset, {f'{{"class":"Record","args":[{number}],"jid":"n{n}"}}': due})
    record.set(queue="default").perform_in(0.01, 7)
    r.sadd(app.store.keys.working_registry, "host:9:gone")  # a dead process with a job
    r.lpush(app.store.keys.working("host:9:gone"), dumps({"class": "Record", "args": [8]}))
    with running_worker(app) as worker:
        wait_for(lambda: r.smembers("ran") == {"7", "8"}, timeout=20)  # promoted and swept
        beat = float(r.hget(worker.identity, "beat") or 0)
        wait_for(lambda: float(r.hget(worker.identity, "beat") or 0) > beat, timeout=5)
    reasons = sorted(str(d["error_message"]) for d in dead(r))
    assert len(reasons) == 3 and r.zcard(zset) == 0
    assert any("NaN" in m for m in reasons) and any("Infinity" in m for m in reasons)
    assert any("overflows" in m for m in reasons)


def test_row3_invalid_utf8_in_a_dead_workers_list_is_parked_and_sweeps_go_on(
    app: App, r: redis.Redis, raw: redis.Redis
) -> None:
    keys = app.store.keys
    for identity in ("host:1:gone", "host:2:gone"):
        r.sadd(keys.working_registry, identity)
        raw.lpush(keys.working(identity), BAD_UTF8)
        r.lpush(keys.working(identity), dumps({"class": "Record", "args": [1], "queue": "q"}))
    report = sweep(app)
    assert report.requeued == 2
    quarantined = dead(r)
    assert len(quarantined) == 2
    assert all(base64.b64decode(str(p["raw_base64"])) == BAD_UTF8 for p in quarantined)
    assert r.llen("queue:q") == 2 and r.scard(keys.working_registry) == 0


def test_row4_a_lone_surrogate_in_an_error_message_is_acknowledged(
    app: App, r: redis.Redis
) -> None:
    name = os.fsdecode(b"report-\xff.csv")

    @app.job(name="Report")
    class Report(Job):
        def perform(self, i: int) -> None:
            raise FileNotFoundError(f"no such file: {name}")

    Report.bulk_perform_async([[i] for i in range(60)])
    worker = run_burst(app)
    assert r.get("stat:processed") == "60" and r.zcard("retry") == 60
    assert worker.health.loops["finish"].errors == 0
    messages = {json.loads(m)["error_message"] for m in r.zrange("retry", 0, -1)}
    assert messages == {"no such file: report-\\udcff.csv"}
    assert working_empty(app, r)


def test_row5_a_100000_deep_payload_is_quarantined(app: App, r: redis.Redis) -> None:
    record = record_job(app, r)
    r.lpush("queue:default", "[" * 100_000 + "]" * 100_000)
    r.lpush("queue:default", '{"class":"Record","args":' + "[" * 150 + "]" * 150 + "}")
    record.perform_async(1)
    worker = run_burst(app)
    assert r.smembers("ran") == {"1"}
    assert sorted("nested more than 100" in str(d["error_message"]) for d in dead(r)) == [
        True,
        True,
    ]
    assert worker.health.loops["fetch"].errors == 0 and working_empty(app, r)


def test_row6_sys_exit_and_a_retry_in_hook_returning_a_timedelta_are_retries(
    app: App, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    import datetime as dt

    @app.job(name="Exits")
    class Exits(Job):
        def perform(self, how: str) -> None:
            if how == "exit":
                sys.exit(2)
            raise GeneratorExit

    @app.job(name="Hooked")
    class Hooked(Job):
        def perform(self) -> None:
            raise ValueError("x")

        def retry_in(self, count: int, exc: BaseException, job: dict[str, object]) -> float:
            return dt.timedelta(seconds=5)  # type: ignore[return-value]

    Exits.perform_async("exit")
    Exits.perform_async("generator")
    Hooked.perform_async()
    with caplog.at_level(logging.WARNING):
        run_burst(app)
    retries = {
        json.loads(m)["error_class"]: s for m, s in r.zrange("retry", 0, -1, withscores=True)
    }
    assert set(retries) == {"SystemExit", "GeneratorExit", "ValueError"}
    assert retries["ValueError"] >= time.time() + 10  # the default backoff, not 5 s
    assert "Hooked.retry_in returned datetime.timedelta" in caplog.text
    assert working_empty(app, r)


def test_row10_trimmed_dead_and_interrupted_entries_are_counted_and_logged(
    app: App, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    app.configure(
        app.settings.replace(
            dead_max_jobs=3, interrupted_max_jobs=2, max_retries_after_interruption=0
        )
    )

    @app.job(name="Doomed", retry=0)
    class Doomed(Job):
        def perform(self, i: int) -> None:
            raise RuntimeError("no")

    jids = [Doomed.perform_async(i).jid for i in range(5)]
    with caplog.at_level(logging.WARNING):
        run_burst(app)
    assert r.zcard("dead") == 3 and r.get("conveyor:stat:trimmed:dead") == "2"
    trimmed = [j for j in jids if j not in {json.loads(m)["jid"] for m in r.zrange("dead", 0, -1)}]
    assert all(j in caplog.text for j in trimmed)

    keys = app.store.keys
    r.sadd(keys.working_registry, "host:1:gone")
    for i in range(4):
        r.lpush(keys.working("host:1:gone"), dumps({"class": "X", "args": [i], "jid": f"i{i}"}))
    sweep(app)
    assert r.zcard("interrupted") == 2 and r.get("conveyor:stat:trimmed:interrupted") == "2"
    assert "jids i0, i1" in caplog.text or "jids i1, i0" in caplog.text


def test_fetch_registers_the_process_so_a_sweep_always_finds_its_list(
    app: App, r: redis.Redis
) -> None:
    record = record_job(app, r)
    started = threading.Event()
    release = threading.Event()

    @app.job(name="Hold")
    class Hold(Job):
        def perform(self) -> None:
            started.set()
            release.wait(10)

    with running_worker(app) as worker:
        registry = app.store.keys.working_registry
        wait_for(lambda: r.sismember(registry, worker.identity), timeout=5)
        r.srem(registry, worker.identity)  # as recover.lua did when it took us for dead
        Hold.perform_async()
        assert started.wait(10)
        assert r.sismember(registry, worker.identity)  # the fetch that moved it added it back
        release.set()
        record.perform_async(1)
        wait_for(lambda: r.sismember("ran", "1"), timeout=5)


class Wedge(ServerMiddleware):
    """Blocks acknowledgement for ever: the finish loop makes no progress."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def settle_batch(self, jobs: list[FetchedJob]) -> None:
        self.release.wait(30)


def test_a_wedged_loop_stops_the_heartbeat_and_the_process_is_recovered_as_dead(
    app: App, r: redis.Redis
) -> None:
    record = record_job(app, r)
    wedge = Wedge()
    app.server_middleware.add(wedge)
    worker = Worker(app, wedge_after=1.0)

    def run() -> None:
        with contextlib.suppress(SystemExit):  # what ends the process in production
            worker.run(install_signals=False)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        record.perform_async(1)
        wait_for(lambda: r.sismember("ran", "1"), timeout=10)
        assert worker.wait(20), "a wedged worker must stop"
        assert worker.exit_code == EXIT_UNHEALTHY
        assert not r.exists(app.store.keys.liveness(worker.identity))
        assert worker.health.loops["finish"].running
        # The job it ran but never acknowledged is recovered like a dead process's.
        assert sweep(app).requeued == 1
    finally:
        wedge.release.set()
        thread.join(10)


def test_loop_health_is_in_the_process_hash_and_the_data_api(app: App, r: redis.Redis) -> None:
    from conveyor.api import Api

    with running_worker(app) as worker:
        wait_for(lambda: r.hget(worker.identity, "health"), timeout=5)
        wait_for(lambda: "fetch" in json.loads(r.hget(worker.identity, "health") or "{}"), 5)
        [info] = Api(app).processes.list()
        assert set(info.health) >= {"fetch", "finish", "heartbeat", "housekeeping"}
        assert info.healthy and info.health["fetch"]["errors"] == 0
