"""Moving a queue to another store (conveyor/features/compat/store_move.py) between two real
redis-servers: queued, scheduled, retrying and dead jobs, byte for byte or renamed; a dry run;
a destination that refuses writes mid-move (nothing lost, the rerun delivers it); an unfinished
move to elsewhere; the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from click.testing import CliRunner

from conveyor import App, Settings
from conveyor.cli import main
from conveyor.errors import ConfigurationError
from conveyor.features.compat.store_move import move_queue_to_store


def payload(n: int, queue: str = "reports", **extra: object) -> str:
    return json.dumps({"class": "Report", "args": [n, []], "queue": queue, "jid": f"j{n}", **extra})


@pytest.fixture
def app(settings: Settings, store_b_url: str, rb: redis.Redis) -> Iterator[App]:
    application = App(settings.replace(stores={"b": store_b_url}))
    yield application
    application.close()


def fill(r: redis.Redis, queued: int = 1200) -> list[str]:
    jobs = [payload(n) for n in range(queued)]
    r.lpush("queue:reports", *jobs)  # jobs[0] is the oldest (at the consuming end)
    r.sadd("queues", "reports", "default")
    r.lpush("queue:default", payload(-1, "default"))
    r.zadd("schedule", {payload(5000): 100.0, payload(5001, "other"): 101.0})
    r.zadd("retry", {payload(6000, retry_queue="reports", queue="x"): 200.0})
    r.zadd("dead", {payload(7000): 300.0})
    return jobs


def test_every_place_moves_byte_for_byte_oldest_first(
    app: App, r: redis.Redis, rb: redis.Redis
) -> None:
    jobs = fill(r)
    rb.lpush("queue:reports", payload(-2))  # already in b: stays ahead of the moved ones
    report = move_queue_to_store(app, "reports", to_store="b", include_dead=True, chunk=100)
    assert report.moved == {"queue:reports": 1200, "schedule": 1, "retry": 1, "dead": 1}
    assert (report.remaining, report.forgotten, report.resumed) == (0, True, 0)
    assert list(reversed(rb.lrange("queue:reports", 0, -1))) == [payload(-2), *jobs]
    assert rb.zrange("schedule", 0, -1, withscores=True) == [(payload(5000), 100.0)]
    assert rb.zscore("retry", payload(6000, retry_queue="reports", queue="x")) == 200.0
    assert rb.zscore("dead", payload(7000)) == 300.0
    assert "reports" in rb.smembers("queues")
    # What is not the queue's stays; nothing is left in flight.
    assert r.llen("queue:reports") == 0 and r.smembers("queues") == {"default"}
    assert r.zcard("schedule") == 1 and r.llen("queue:default") == 1 and r.zcard("dead") == 0
    assert not any(r.scan_iter("conveyor:moving*"))


def test_jobs_deferred_by_a_concurrency_limit_follow_the_queue(
    app: App, r: redis.Redis, rb: redis.Redis
) -> None:
    # Jobs of a limited class wait for a slot in a list of their class, outside the queue:
    # left there, they would wait for a worker of the old store for ever.
    keys = app.store.keys
    deferred = [payload(n) for n in range(8000, 8005)]
    r.lpush(keys.limit_deferred("Report"), *deferred)  # 8000 is the oldest (the right end)
    r.lpush(keys.limit_deferred("Other"), payload(9000, "default"))
    r.sadd(keys.limit_registry, "Report", "Other")
    fill(r, 3)
    dry = move_queue_to_store(app, "reports", to_store="b", dry_run=True)
    assert dry.moved["deferred"] == 5 and r.llen(keys.limit_deferred("Report")) == 5
    report = move_queue_to_store(app, "reports", to_store="b", chunk=2)
    assert report.moved["deferred"] == 5 and report.moved["queue:reports"] == 3
    waiting = list(reversed(rb.lrange("queue:reports", 0, -1)))
    assert waiting[:5] == deferred, "deferred jobs first, oldest first, byte for byte"
    assert r.llen(keys.limit_deferred("Report")) == 0
    assert r.lrange(keys.limit_deferred("Other"), 0, -1) == [payload(9000, "default")]
    assert not any(r.scan_iter("conveyor:moving*"))


def test_renaming_on_the_way_rewrites_the_queue(app: App, r: redis.Redis, rb: redis.Redis) -> None:
    fill(r, 3)
    move_queue_to_store(app, "reports", "heavy", to_store="b")
    moved = [json.loads(x) for x in rb.lrange("queue:heavy", 0, -1)]
    assert {j["queue"] for j in moved} == {"heavy"} and len(moved) == 3
    retried = json.loads(rb.zrange("retry", 0, -1)[0])
    assert (retried["queue"], retried["retry_queue"]) == ("x", "heavy")
    assert r.zcard("dead") == 1  # dead jobs only with include_dead


def test_dry_run_counts_and_moves_nothing(app: App, r: redis.Redis, rb: redis.Redis) -> None:
    fill(r, 10)
    report = move_queue_to_store(app, "reports", to_store="b", dry_run=True, include_dead=True)
    assert report.moved == {"queue:reports": 10, "schedule": 1, "retry": 1, "dead": 1}
    assert r.llen("queue:reports") == 10 and rb.dbsize() == 0


def refusing_writes(rb: redis.Redis) -> Iterator[None]:
    """The destination refuses writes (as a primary without its replica would)."""
    rb.config_set("min-replicas-to-write", "1")
    try:
        yield
    finally:
        rb.config_set("min-replicas-to-write", "0")


def in_flight(r: redis.Redis) -> list[str]:
    out: list[str] = []
    for key in r.scan_iter("conveyor:moving:reports:*"):
        kind = r.type(key)
        out += r.lrange(key, 0, -1) if kind == "list" else r.zrange(key, 0, -1)
    return out


def test_a_destination_failing_mid_move_loses_no_queued_job(
    app: App, r: redis.Redis, rb: redis.Redis
) -> None:
    jobs = [payload(n) for n in range(1000)]
    r.lpush("queue:reports", *jobs)
    with (
        contextmanager(refusing_writes)(rb),
        pytest.raises(redis.ResponseError, match="NOREPLICAS"),
    ):
        move_queue_to_store(app, "reports", to_store="b", chunk=100)
    # The chunk taken when the write failed waits in the run's moving list.
    assert len(in_flight(r)) == 100
    assert sorted(r.lrange("queue:reports", 0, -1) + in_flight(r)) == sorted(jobs)
    report = move_queue_to_store(app, "reports", to_store="b", chunk=100)
    assert report.resumed == 100 and report.total == 900
    assert sorted(rb.lrange("queue:reports", 0, -1)) == sorted(jobs)  # each exactly once here
    assert not any(r.scan_iter("conveyor:moving*"))


def test_a_destination_failing_mid_move_loses_no_scheduled_job(
    app: App, r: redis.Redis, rb: redis.Redis
) -> None:
    fill(r, 10)
    with (
        contextmanager(refusing_writes)(rb),
        pytest.raises(redis.ResponseError, match="NOREPLICAS"),
    ):
        move_queue_to_store(app, "reports", to_store="b")
    assert in_flight(r) == [payload(5000)] and r.zscore("schedule", payload(5000)) is None
    report = move_queue_to_store(app, "reports", to_store="b")
    assert report.resumed == 1 and report.moved == {"queue:reports": 10, "retry": 1}
    assert rb.zscore("schedule", payload(5000)) == 100.0


def test_an_unfinished_move_elsewhere_is_finished_first(
    app: App, r: redis.Redis, store_b_url: str
) -> None:
    fill(r, 5)
    r.hset("conveyor:moving:reports", "deadbeef", json.dumps({"store": "c", "queue": "reports"}))
    r.lpush("conveyor:moving:reports:deadbeef", payload(99))
    with pytest.raises(ConfigurationError, match=r'did not finish, to .*"store": "c"'):
        move_queue_to_store(app, "reports", to_store="b")
    assert r.llen("queue:reports") == 5


def test_bad_moves_are_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="two different stores"):
        move_queue_to_store(app, "reports", to_store="default")
    with pytest.raises(ConfigurationError, match="no store named 'c'"):
        move_queue_to_store(app, "reports", to_store="c")


def test_cli_moves_from_the_chosen_store(
    settings: Settings, store_b_url: str, r: redis.Redis, rb: redis.Redis
) -> None:
    fill(r, 20)
    env = {
        "CONVEYOR_REDIS_URL": settings.redis_url or "",
        "CONVEYOR_STORES": json.dumps({"b": store_b_url}),
    }
    runner = CliRunner()
    result = runner.invoke(main, ["compat", "migrate-queue", "reports", "--to-store", "b"], env=env)
    assert result.exit_code == 0, result.output
    assert "moved 22 job(s) from queue reports of store default to queue reports of store b" in (
        result.output
    )
    # And back, choosing the source with --store.
    back = ["compat", "migrate-queue", "reports", "--store", "b", "--to-store", "default", "--json"]
    result = runner.invoke(main, back, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["total"] == 22 and r.llen("queue:reports") == 20
    missing = runner.invoke(main, ["compat", "migrate-queue", "--to-store", "b"], env=env)
    assert missing.exit_code != 0 and "name the queue" in missing.output
