"""The data API against a real Redis: what a dashboard or operator sees and changes."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from support import run_burst, running_worker, wait_for

from conveyor import App, ConfigurationError, FakeClock, Job, NotFoundError, PayloadError, Settings
from conveyor.api import Api, JobRecord


@pytest.fixture
def api(app: App) -> Iterator[Api]:
    with Api(app) as data_api:
        yield data_api


def _zadd(r: redis.Redis, key: str, score: float, **fields: object) -> str:
    payload = {"class": "Hard", "args": [], "queue": "default", **fields}
    raw = json.dumps(payload)
    r.zadd(key, {raw: score})
    return raw


def test_stats_count_queues_sets_and_latency(settings: Settings, r: redis.Redis) -> None:
    clock = FakeClock(1_700_000_000.0)
    app = App(settings, clock=clock)
    app.enqueue("A", 1)
    app.enqueue("A", 2, queue="mail")
    app.enqueue("A", 3, queue="mail")
    clock.advance(30)
    app.enqueue("A", 4)  # newer; the oldest default job still waited 30 s
    r.set("stat:processed", 12)
    r.set("stat:failed", 2)
    _zadd(r, "retry", 1, jid="r1")
    _zadd(r, "dead", 1, jid="d1")
    _zadd(r, "dead", 2, jid="d2")
    _zadd(r, "schedule", 5, jid="s1")
    _zadd(r, "interrupted", 5, jid="i1")
    with Api(app) as api:
        stats = api.stats()
    app.close()
    assert (stats.processed, stats.failed) == (12, 2)
    assert (stats.retry_size, stats.dead_size, stats.scheduled_size) == (1, 2, 1)
    assert stats.interrupted_size == 1
    assert stats.enqueued == 4 and stats.queues == {"default": 2, "mail": 2}
    assert stats.default_queue_latency == pytest.approx(30.0)
    assert (stats.processes_size, stats.workers_size) == (0, 0)


def test_history_reads_daily_counters_newest_first(api: Api, r: redis.Redis) -> None:
    r.set("stat:processed:2024-05-02", 17)
    r.set("stat:processed:2024-04-30", 4)
    r.set("stat:failed:2024-05-01", 3)
    history = api.history(3, start=dt.date(2024, 5, 2))
    assert list(history.processed.items()) == [
        ("2024-05-02", 17),
        ("2024-05-01", 0),
        ("2024-04-30", 4),
    ]
    assert history.failed == {"2024-05-02": 0, "2024-05-01": 3, "2024-04-30": 0}
    with pytest.raises(ValueError, match="between 1 and 1825"):
        api.history(0)


def test_reset_stats_zeroes_totals_only(api: Api, r: redis.Redis) -> None:
    r.set("stat:processed", 5)
    r.set("stat:failed", 2)
    r.set("stat:failed:2024-05-01", 2)
    api.reset_stats("failed")
    assert (api.stats().processed, api.stats().failed) == (5, 0)
    assert r.get("stat:failed:2024-05-01") == "2"


def test_queue_pages_finds_deletes_and_clears(app: App, api: Api, r: redis.Redis) -> None:
    jids = [app.enqueue("Hard", i, queue="q").jid for i in range(120)]
    queue = api.queue("q")
    assert queue.size() == 120
    page = queue.jobs(0, 5)
    assert [job.args for job in page] == [[119], [118], [117], [116], [115]]  # newest first
    assert page[0].queue == "q" and page[0].job_class == "Hard" and page[0].enqueued_at
    assert [job.jid for job in queue][-1] == jids[0]  # iteration crosses page boundaries
    found = queue.find_job(jids[3])
    assert found is not None and found.args == [3]
    assert queue.delete_job(jids[3]) is True
    assert queue.find_job(jids[3]) is None and queue.size() == 119
    assert queue.delete_job("0" * 24) is False
    assert [q.name for q in api.queues()] == ["q"]
    assert queue.clear() == 119
    assert queue.size() == 0 and api.queues() == [] and r.exists("queue:q") == 0


def test_empty_queue_has_no_latency(api: Api) -> None:
    assert api.queue("nothing").latency() == 0.0
    assert api.queue("nothing").jobs() == []


def test_failed_job_retried_from_api_keeps_failure_fields(app: App, api: Api) -> None:
    attempts: list[int] = []

    @app.job()
    def flaky(x: int) -> None:
        attempts.append(x)
        if len(attempts) == 1:
            raise ValueError("first try fails")

    jid = flaky.perform_async(7).jid
    run_burst(app)
    [entry] = api.retries.jobs()
    assert entry.jid == jid and entry.error_class == "ValueError" and entry.retry_count == 0
    assert entry.error_message == "first try fails" and entry.at is not None
    assert entry.at.timestamp() > time.time() + 10  # backoff: not due yet

    pushed = api.retries.retry(jid)
    assert api.retries.size() == 0
    [queued] = api.queue("default").jobs()
    assert queued.jid == jid and queued.error_class == "ValueError"  # failure fields kept
    assert queued.retry_count == -1 == pushed.retry_count  # Sidekiq gives the attempt back
    assert queued.enqueued_at is not None and queued.enqueued_at >= entry.failed_at  # type: ignore[operator]
    run_burst(app)
    assert attempts == [7, 7] and api.retries.size() == 0 and api.dead.size() == 0


def test_retry_all_moves_every_valid_entry_with_progress(api: Api, r: redis.Redis) -> None:
    for i in range(250):
        _zadd(r, "dead", 1000 + i, jid=f"{i:024x}", queue="low" if i % 2 else "high", retry_count=3)
    r.zadd("dead", {"not json at all": 1})
    seen: list[tuple[int, int]] = []
    moved = api.dead.retry_all(progress=lambda done, total: seen.append((done, total)))
    assert moved == 250
    assert api.queue("low").size() == 125 and api.queue("high").size() == 125
    assert [e.raw for e in api.dead.jobs()] == ["not json at all"]  # not a job: left alone
    assert seen[-1] == (251, 251) and len(seen) == 3
    job = api.queue("low").jobs(0, 1)[0]
    assert job.retry_count == 2 and "enqueued_at" in job.payload
    with pytest.raises(PayloadError, match="not a valid job"):
        api.dead.retry(api.dead.jobs()[0].jid)


def test_dead_set_lists_newest_first_and_retry_set_soonest_first(api: Api, r: redis.Redis) -> None:
    for score, jid in ((10, "a"), (30, "c"), (20, "b")):
        _zadd(r, "dead", score, jid=jid)
        _zadd(r, "retry", score, jid=jid)
    assert [j.jid for j in api.dead.jobs()] == ["c", "b", "a"]
    assert [j.jid for j in api.retries.jobs()] == ["a", "b", "c"]
    assert [j.jid for j in api.retries.jobs(1, 1)] == ["b"]
    assert [j.score for j in api.retries] == [10.0, 20.0, 30.0]


def test_kill_moves_to_dead_and_runs_death_handlers(app: App, api: Api, r: redis.Redis) -> None:
    deaths: list[tuple[str, str]] = []
    app.death_handlers.append(lambda job, exc: deaths.append((job["jid"], str(exc))))
    for i in range(3):
        _zadd(r, "retry", 100 + i, jid=f"k{i}", error_class="KeyError")
    killed = api.retries.kill("k1")
    assert killed.jid == "k1" and api.dead.find_job("k1") is not None
    assert deaths == [("k1", "Job killed by API")]
    assert api.retries.kill_all() == 2
    assert api.retries.size() == 0 and api.dead.size() == 3
    with pytest.raises(NotFoundError, match="'k1'"):
        api.retries.kill("k1")


def test_kill_respects_dead_set_cap(settings: Settings, r: redis.Redis) -> None:
    app = App(settings.replace(dead_max_jobs=2))
    with Api(app) as api:
        for i in range(3):
            _zadd(r, "dead", time.time() - 10 + i, jid=f"d{i}")
        _zadd(r, "schedule", time.time() + 60, jid="s")
        api.scheduled.kill("s")
        assert [j.jid for j in api.dead.jobs()] == ["s", "d2"]
    app.close()


def test_scheduled_job_enqueued_now(app: App, api: Api) -> None:
    class Later(Job):
        def perform(self, n: int) -> None: ...

    app.register(Later)
    jid = Later.perform_in(3600, 5).jid
    [entry] = api.scheduled.jobs()
    assert entry.jid == jid and entry.score is not None and entry.score > time.time() + 3000
    api.scheduled.retry(jid)
    assert api.scheduled.size() == 0
    [queued] = api.queue("default").jobs()
    assert queued.jid == jid and queued.args == [5] and "at" not in queued.payload


def test_interrupted_retry_resets_the_interruption_budget(api: Api, r: redis.Redis) -> None:
    _zadd(r, "interrupted", 5, jid="i1", queue="imports", interrupted_count=4)
    api.interrupted.retry("i1")
    [queued] = api.queue("imports").jobs()
    assert queued.jid == "i1" and "interrupted_count" not in queued.payload


def test_delete_and_clear_sets(api: Api, r: redis.Redis) -> None:
    for i in range(5):
        _zadd(r, "retry", i, jid=f"x{i}")
    assert api.retries.delete_job("x2") is True
    assert api.retries.delete_job("x2") is False
    assert api.retries.find_job("x2") is None
    assert api.retries.clear() == 4 and api.retries.size() == 0


def test_find_job_matches_jid_exactly_even_with_glob_characters(api: Api, r: redis.Redis) -> None:
    _zadd(r, "retry", 1, jid="abc123")
    _zadd(r, "retry", 2, jid="abc1234")
    _zadd(r, "retry", 3, jid="a*[c]")
    found = api.retries.find_job("abc123")
    assert found is not None and found.score == 1.0
    assert api.retries.find_job("abc*") is None
    starred = api.retries.find_job("a*[c]")
    assert starred is not None and starred.score == 3.0
    with pytest.raises(NotFoundError, match="no job with jid 'zzz' in the retry set"):
        api.retries.retry("zzz")


def test_job_record_reads_sidekiq7_milliseconds_and_bad_json() -> None:
    rec = JobRecord.from_raw(
        json.dumps({"class": "W", "args": [], "jid": "j", "enqueued_at": 1_700_000_000_123})
    )
    assert rec.enqueued_at == pytest.approx(1_700_000_000.123)
    assert rec.latency(1_700_000_010.123) == pytest.approx(10.0)
    bad = JobRecord.from_raw("[1, 2]", queue="q")
    assert not bad.valid and bad.args == ["[1, 2]"] and bad.queue == "q"


def test_processes_list_quiet_stop_and_busy_work(app: App, api: Api) -> None:
    started = threading.Event()
    release = threading.Event()

    @app.job(queue="default")
    def blocker() -> None:
        started.set()
        release.wait(10)

    with running_worker(app) as worker:
        blocker.perform_async()
        assert started.wait(10)
        wait_for(lambda: api.work.size() == 1)
        [proc] = api.processes.list()
        assert proc.identity == worker.identity and proc.concurrency == app.settings.concurrency
        assert proc.queues == ["default"] and proc.pid is not None and not proc.quiet
        [work] = api.work.list()
        assert work.identity == worker.identity and work.job.job_class == "blocker"
        assert work.queue == "default" and work.run_at is not None
        assert api.stats().workers_size == 1

        api.processes.quiet(worker.identity)
        wait_for(lambda: api.processes.get(worker.identity).quiet, timeout=5)
        release.set()
        api.processes.stop(worker.identity)
        assert worker.wait(10), "worker did not stop after a stop signal through Redis"
    assert api.processes.list() == []
    with pytest.raises(NotFoundError, match="no live process"):
        api.processes.stop(worker.identity)


def test_processes_whose_heartbeat_expired_are_pruned(api: Api, r: redis.Redis) -> None:
    r.sadd("processes", "gone:1:abc", "alive:2:def")
    r.hset("alive:2:def", mapping={"info": json.dumps({"pid": 2}), "busy": 3, "quiet": "false"})
    assert api.processes.size() == 2
    assert [p.identity for p in api.processes.list()] == ["alive:2:def"]
    assert r.smembers("processes") == {"alive:2:def"}
    assert api.processes.quiet_all() == 1
    assert r.lrange("alive:2:def-signals", 0, -1) == ["TSTP"]


def test_sidekiq6_workers_hash_is_read(api: Api, r: redis.Redis) -> None:
    # What a Ruby Sidekiq 6 process writes: only <identity>:workers, payload as a JSON string.
    r.sadd("processes", "ruby:9:x")
    r.hset("ruby:9:x", mapping={"info": json.dumps({"pid": 9}), "busy": 1})
    job = json.dumps({"class": "HardWorker", "args": [1], "jid": "j", "queue": "default"})
    r.hset(
        "ruby:9:x:workers", "tid1", json.dumps({"queue": "default", "payload": job, "run_at": 5})
    )
    [work] = api.work.list()
    assert (work.identity, work.thread_id, work.job.job_class, work.run_at) == (
        "ruby:9:x",
        "tid1",
        "HardWorker",
        5.0,
    )


def test_prefix_isolates_and_purge_removes_only_prefixed_keys(
    settings: Settings, r: redis.Redis
) -> None:
    plain = App(settings)
    plain.enqueue("A", 1)
    scoped = App(settings.replace(key_prefix="tenant"))
    scoped.enqueue("A", 2)
    scoped.enqueue("A", 3)
    with Api(plain) as api_plain, Api(scoped) as api_scoped:
        assert api_plain.stats().enqueued == 1 and api_scoped.stats().enqueued == 2
        assert api_scoped.purge_prefix() == 2  # tenant:queues and tenant:queue:default
        assert api_scoped.stats().enqueued == 0 and api_plain.stats().enqueued == 1
        with pytest.raises(ConfigurationError, match="without a key prefix"):
            api_plain.purge_prefix()
    plain.close()
    scoped.close()


def test_enqueue_by_name_with_queue_and_time(api: Api) -> None:
    result = api.enqueue("RubyOnly", ["bob", 5], queue="critical")
    [job] = api.queue("critical").jobs()
    assert job.jid == result.jid and job.job_class == "RubyOnly" and job.args == ["bob", 5]
    later = api.enqueue("RubyOnly", [], at=time.time() + 60)
    assert api.scheduled.find_job(later.jid) is not None
