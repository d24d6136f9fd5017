from __future__ import annotations

import json
import threading

import pytest
import redis
from support import run_burst, running_worker, wait_for

from conveyor import App, ConfigurationError, Job
from conveyor.features.dedup import deduplicate, digest, perform_twice
from conveyor.features.flags import Flags
from conveyor.redis.dedup import DedupStore


def queued(r: redis.Redis, queue: str = "default") -> list[dict[str, object]]:
    return [json.loads(x) for x in reversed(r.lrange(f"queue:{queue}", 0, -1))]


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


def test_until_executed_releases_on_failure_so_retries_are_not_swallowed(
    app: App, r: redis.Redis
) -> None:
    @app.job(idempotent=True, deduplicate=deduplicate("until_executed"))
    def fails(x: int) -> None:
        raise RuntimeError("boom")

    fails.perform_async(1)
    run_burst(app)
    assert r.zcard("retry") == 1
    assert not r.keys("conveyor:dedup:*")
    assert fails.perform_async(1)


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


def test_feature_flag_switches_deduplication_off(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True, deduplicate=deduplicate(feature_flag="dedup_refresh"))
    def refresh(x: int) -> None: ...

    assert refresh.perform_async(1) and not refresh.perform_async(1)
    Flags.of(app).disable("dedup_refresh")
    assert refresh.perform_async(1) and refresh.perform_async(1)
    assert r.llen("queue:default") == 3


def test_declaration_mistakes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="strategy 'until_done'"):
        deduplicate("until_done")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ttl must be seconds > 0"):
        deduplicate(ttl=0)


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
