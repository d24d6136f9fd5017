from __future__ import annotations

import datetime as dt
import json
import logging
import threading

import pytest
import redis
from support import run_burst, running_worker, wait_for

from conveyor import App, ConfigurationError, Job
from conveyor.core.processor import Processor
from conveyor.features.dedup import deduplicate, digest, perform_twice
from conveyor.features.flags import Flags
from conveyor.redis.dedup import DedupStore


def queued(r: redis.Redis, queue: str = "default") -> list[dict[str, object]]:
    return [json.loads(x) for x in reversed(r.lrange(f"queue:{queue}", 0, -1))]


def retry_now(app: App, r: redis.Redis) -> None:
    """What the scheduler does when a retry is due: move it to its queue, as it is."""
    app.store.promote("retry", [(raw, "default", raw) for raw in r.zrange("retry", 0, -1)])


def test_idempotent_duplicates_are_dropped_until_executing(app: App, r: redis.Redis) -> None:
    ran: list[int] = []

    @app.job(idempotent=True)
    def refresh(user_id: int) -> None:
        ran.append(user_id)

    first = refresh.perform_async(7)
    second = refresh.perform_async(7)
    other = refresh.perform_async(8)
    assert first and other
    assert not second and second.dropped == f"duplicate of {first.jid}"
    assert second.info["duplicate_of"] == first.jid
    assert [j["args"] for j in queued(r)] == [[7], [8]]
    run_burst(app)
    assert sorted(ran) == [7, 8]
    # Released when the job started: the same arguments enqueue again.
    assert refresh.perform_async(7)


def test_until_executing_accepts_a_twin_while_the_first_runs(app: App, r: redis.Redis) -> None:
    started, release = threading.Event(), threading.Event()

    @app.job(idempotent=True)
    def slow(x: int) -> None:
        started.set()
        release.wait(10)
        r.incr("slow-runs")

    slow.perform_async(1)
    with running_worker(app):
        assert started.wait(5)
        assert slow.perform_async(1), "the key is released when the job starts"
        release.set()
        wait_for(lambda: r.get("slow-runs") == "2", timeout=10)


def test_until_executed_drops_twins_while_running_and_releases_after(
    app: App, r: redis.Redis
) -> None:
    started, release = threading.Event(), threading.Event()

    @app.job(idempotent=True, deduplicate=deduplicate("until_executed"))
    def flush(x: int) -> None:
        started.set()
        release.wait(10)
        r.incr("flush-runs")

    flush.perform_async(1)
    with running_worker(app):
        assert started.wait(5)
        assert not flush.perform_async(1), "still running: the twin is dropped"
        release.set()
        wait_for(lambda: r.get("flush-runs") == "1", timeout=10)
        wait_for(lambda: not r.keys("conveyor:dedup:*"), timeout=5)
        assert flush.perform_async(1), "released when it finished"


def test_until_executed_keeps_its_key_while_the_job_waits_for_its_retry(
    app: App, r: redis.Redis
) -> None:
    """GitLab's semantics (issue 19): a twin enqueued while the failed job waits for its
    retry is dropped (the retry covers it); the key goes when the retry succeeds."""
    attempts: list[int] = []

    @app.job(idempotent=True, deduplicate=deduplicate("until_executed"))
    def flaky(x: int) -> None:
        attempts.append(x)
        if len(attempts) == 1:
            raise RuntimeError("boom")

    first = flaky.perform_async(1)
    run_burst(app)
    assert r.zcard("retry") == 1
    twin = flaky.perform_async(1)
    assert not twin and twin.dropped == f"duplicate of {first.jid}"
    retry_now(app, r)
    run_burst(app)
    assert attempts == [1, 1] and r.llen("queue:default") == 0
    assert not r.keys("conveyor:dedup:*")
    assert flaky.perform_async(1)


def test_until_executed_key_goes_when_the_job_dies(
    app: App, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    @app.job(idempotent=True, deduplicate="until_executed", retry=1)
    def doomed(x: int) -> None:
        raise RuntimeError("boom")

    doomed.perform_async(1)
    run_burst(app)
    assert r.keys("conveyor:dedup:*")  # waiting for its one retry
    retry_now(app, r)
    with caplog.at_level(logging.ERROR, logger="conveyor.processor"):
        run_burst(app)
    assert r.zcard("dead") == 1 and not r.keys("conveyor:dedup:*")
    assert not [rec for rec in caplog.records if "death handler" in rec.getMessage()]


def test_until_executed_can_release_on_failure_as_before(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True, deduplicate=deduplicate("until_executed", release_on_failure=True))
    def fails(x: int) -> None:
        raise RuntimeError("boom")

    fails.perform_async(1)
    run_burst(app)
    assert r.zcard("retry") == 1
    assert not r.keys("conveyor:dedup:*")
    assert fails.perform_async(1)


def test_per_job_hooks_keep_the_key_for_a_retry_too(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True, deduplicate="until_executed")
    def fails(x: int) -> None:
        raise RuntimeError("boom")

    fails.perform_async(1)
    job = json.loads(r.rpop("queue:default") or "")
    processor = Processor(app)
    try:
        instance = fails.instantiate()
        instance.job = job
        with pytest.raises(RuntimeError):
            processor.run(fails, instance, job, "default", json.dumps(job))
    finally:
        processor.runner.close()
    assert r.hget(f"conveyor:dedup:{job['idempotency_key']}", "jid") == job["jid"]


def test_reschedule_once_runs_exactly_one_extra_time(app: App, r: redis.Redis) -> None:
    started, release = threading.Event(), threading.Event()

    @app.job(
        idempotent=True,
        deduplicate=deduplicate("until_executed", if_deduplicated="reschedule_once"),
    )
    def recalc(x: int) -> None:
        r.incr("recalc-runs")
        started.set()
        release.wait(10)

    recalc.perform_async(1)
    with running_worker(app):
        assert started.wait(5)
        dropped = [recalc.perform_async(1) for _ in range(5)]
        assert not any(dropped)
        release.set()
        wait_for(lambda: r.get("recalc-runs") == "2", timeout=10)
        wait_for(lambda: r.llen("queue:default") == 0 and not r.keys("conveyor:dedup:*"), timeout=5)
    assert r.get("recalc-runs") == "2", "one extra run, not five"


def test_a_twin_dropped_before_the_job_started_does_not_reschedule(
    app: App, r: redis.Redis
) -> None:
    @app.job(
        idempotent=True,
        deduplicate=deduplicate("until_executed", if_deduplicated="reschedule_once"),
    )
    def recalc(x: int) -> None:
        r.incr("runs")

    recalc.perform_async(1)
    assert not recalc.perform_async(1)
    run_burst(app)
    assert r.get("runs") == "1"


def test_scheduled_jobs_are_not_deduplicated_unless_asked(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True)
    def plain(x: int) -> None: ...

    @app.job(idempotent=True, deduplicate=deduplicate(ttl=60, including_scheduled=True))
    def strict(x: int) -> None: ...

    assert plain.perform_in(300, 1) and plain.perform_in(300, 1)
    assert plain.perform_async(1)
    assert strict.perform_in(300, 1)
    assert not strict.perform_in(10, 1)
    assert not strict.perform_async(1)
    key = digest(strict, [1])
    ttl = DedupStore(app.store).ttl_ms(key) / 1000
    assert 300 + 60 - 5 < ttl <= 300 + 60, f"cookie lives until run time + ttl, got {ttl}"


def test_ttl_is_configurable(app: App) -> None:
    @app.job(idempotent=True, deduplicate=deduplicate(ttl=5))
    def quick(x: int) -> None: ...

    quick.perform_async(1)
    assert 0 < DedupStore(app.store).ttl_ms(digest(quick, [1])) <= 5000


def test_idempotency_arguments_choose_what_counts(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True, idempotency_arguments=[0])
    def by_project(project_id: int, requested_by: str) -> None: ...

    @app.job(idempotent=True, idempotency_arguments=lambda args: [args[1]["id"]])
    def by_callable(note: str, obj: dict[str, int]) -> None: ...

    assert by_project.perform_async(1, "ann")
    assert not by_project.perform_async(1, "bob")
    assert by_project.perform_async(2, "ann")
    assert by_callable.perform_async("x", {"id": 3})
    assert not by_callable.perform_async("y", {"id": 3})


def test_non_idempotent_duplicates_are_enqueued_and_marked(app: App, r: redis.Redis) -> None:
    @app.job(deduplicate=deduplicate())
    def risky(x: int) -> None: ...

    first = risky.perform_async(1)
    second = risky.perform_async(1)
    assert first and second
    assert second.info["duplicate_of"] == first.jid
    jobs = queued(r)
    assert "duplicate-of" not in jobs[0] and jobs[1]["duplicate-of"] == first.jid


def test_wal_locations_keep_the_newest_lsn_per_database(app: App, r: redis.Redis) -> None:
    seen: list[object] = []

    @app.job(name="WalJob", idempotent=True)
    class WalJob(Job):
        def perform(self, x: int) -> None:
            seen.append(self.job.get("dedup_wal_locations"))

    app.client.push_payload(
        {"class": "WalJob", "args": [1], "wal_locations": {"main": "0/D525E3A8", "ci": "1/A0"}}
    )
    assert not app.client.push_payload(
        {"class": "WalJob", "args": [1], "wal_locations": {"main": "0/D525E3B0", "ci": "0/FF"}}
    )
    assert not app.client.push_payload(
        {"class": "WalJob", "args": [1], "wal_locations": {"main": "0/D525E3A9", "sec": "2/00"}}
    )
    run_burst(app)
    assert seen == [{"main": "0/D525E3B0", "ci": "1/A0", "sec": "2/00"}]


def test_feature_flag_gates_deduplication_and_unset_means_off(app: App, r: redis.Redis) -> None:
    """One rule for flags (docs/flags.md): a flag never set is off, here as on a job gate."""

    @app.job(idempotent=True, deduplicate=deduplicate(feature_flag="dedup_refresh"))
    def refresh(x: int) -> None: ...

    assert refresh.perform_async(1) and refresh.perform_async(1)  # unset: off, no dedup
    Flags.of(app).enable("dedup_refresh")
    assert refresh.perform_async(2) and not refresh.perform_async(2)
    Flags.of(app).disable("dedup_refresh")
    assert refresh.perform_async(3) and refresh.perform_async(3)
    assert r.llen("queue:default") == 5


def test_declaration_mistakes_are_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="strategy 'until_done'"):
        deduplicate("until_done")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl=0 must be a number of seconds > 0"):
        deduplicate(ttl=0)
    with pytest.raises(ConfigurationError, match="including_scheduled='yes' must be True or False"):
        deduplicate(including_scheduled="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="reschedule_once' needs strategy 'until_exec"):
        deduplicate("until_executing", if_deduplicated="reschedule_once")
    with pytest.raises(ConfigurationError, match="deduplicate='until_done' is not a strategy"):
        app.job(idempotent=True, deduplicate="until_done")(lambda x: None)
    with pytest.raises(ConfigurationError, match="idempotent='yes' must be True or False"):
        app.job(idempotent="yes")(lambda x: None)


def test_ruby_style_strategy_names_and_timedelta_ttls(app: App, r: redis.Redis) -> None:
    """``deduplicate="until_executed"`` is what Ruby's ``deduplicate :until_executed`` reads
    as; it used to be accepted and then make every enqueue raise (issue 19)."""

    @app.job(idempotent=True, deduplicate="until_executed")
    def sync(x: int) -> None: ...

    first = sync.perform_async(1)
    assert first and not sync.perform_async(1)
    assert deduplicate(ttl=dt.timedelta(minutes=5)).ttl == 300.0
    key = f"conveyor:dedup:{digest(sync, [1])}"
    assert 0 < r.pttl(key) <= 6 * 3600 * 1000


def test_perform_twice_runs_the_real_job_twice(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True)
    def set_name(user_id: int, name: str) -> None:
        r.hset("names", str(user_id), name)
        r.incr("calls")

    perform_twice(set_name, 1, "ann")
    assert r.hgetall("names") == {"1": "ann"} and r.get("calls") == "2"

    @app.job()
    def not_declared() -> None: ...

    with pytest.raises(ConfigurationError, match="not declared idempotent"):
        perform_twice(not_declared)


def test_bulk_enqueue_deduplicates_within_and_across_batches(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True)
    def touch(x: int) -> None: ...

    assert touch.perform_async(3)
    jids = touch.bulk_perform_async([[i % 5] for i in range(20)], batch_size=7)
    assert len(jids) == 4, "0, 1, 2 and 4 once each; 3 was already queued"
    assert sorted(j["args"][0] for j in queued(r)) == [0, 1, 2, 3, 4]


def test_per_job_hooks_release_without_a_batch(app: App, r: redis.Redis) -> None:
    from conveyor.core.processor import Processor

    @app.job(idempotent=True, deduplicate=deduplicate("until_executed"))
    def once(x: int) -> None: ...

    assert once.perform_async(1)
    raw = r.rpop("queue:default") or ""
    processor = Processor(app, identity="host:3:direct")
    assert processor.process(processor.fetched("default", raw)).kind == "ok"
    assert not r.keys("conveyor:dedup:*"), "released after the run"
    processor.runner.close()


def test_testing_modes_do_not_deduplicate_or_touch_redis(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True)
    def f(x: int) -> None: ...

    with app.testing.fake():
        assert f.perform_async(1) and f.perform_async(1)
        assert len(app.testing.jobs(f)) == 2
    assert r.dbsize() == 0
