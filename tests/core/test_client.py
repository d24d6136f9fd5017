from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import redis

from conveyor import App, ConfigurationError, Job, SerializationError
from conveyor.clock import FakeClock
from conveyor.core.middleware import ClientMiddleware, EnqueueContext


def test_perform_async_writes_sidekiq_wire_format(app: App, r: redis.Redis) -> None:
    @app.job(queue="mail", retry=5)
    def send(user_id: int, opts: dict[str, Any]) -> None: ...

    result = send.perform_async(7, {"lang": "ko"})
    assert result and len(str(result)) == 24
    assert r.smembers("queues") == {"mail"}
    raw = r.lrange("queue:mail", 0, -1)
    assert len(raw) == 1
    job = json.loads(raw[0])
    assert set(job) == {"class", "args", "queue", "retry", "jid", "created_at", "enqueued_at"}
    assert job["class"] == "send" and job["args"] == [7, {"lang": "ko"}]
    assert job["queue"] == "mail" and job["retry"] == 5 and job["jid"] == result.jid
    assert isinstance(job["created_at"], float) and job["enqueued_at"] >= job["created_at"]


def test_class_jobs_answer_to_their_wire_name(app: App, r: redis.Redis) -> None:
    @app.job(name="HardWorker", backtrace=5, dead=False)
    class Hard(Job):
        def perform(self, name: str) -> None: ...

    Hard.perform_async("bob")
    job = json.loads(r.rpop("queue:default") or "")
    assert job["class"] == "HardWorker"
    assert job["backtrace"] == 5 and job["dead"] is False
    assert app.find("HardWorker") is Hard


def test_scheduling_goes_to_the_schedule_set(redis_url: str, r: redis.Redis) -> None:
    from conveyor import Settings

    clock = FakeClock(1_800_000_000.0)
    app = App(Settings(redis_url=redis_url), clock=clock)

    @app.job()
    def later(x: int) -> None: ...

    later.perform_in(30, 1)
    later.perform_in(dt.timedelta(minutes=2), 2)
    later.perform_at(dt.datetime.fromtimestamp(1_800_000_500.0, dt.UTC), 3)
    later.perform_at(1_799_999_000.0, 4)  # in the past: straight to the queue
    scored = {json.loads(m)["args"][0]: s for m, s in r.zrange("schedule", 0, -1, withscores=True)}
    assert scored == {1: 1_800_000_030.0, 2: 1_800_000_120.0, 3: 1_800_000_500.0}
    assert all("enqueued_at" not in json.loads(m) for m in r.zrange("schedule", 0, -1))
    assert json.loads(r.rpop("queue:default") or "")["args"] == [4]
    with pytest.raises(ConfigurationError, match="naive datetime"):
        later.perform_at(dt.datetime(2030, 1, 1), 5)
    app.close()


def test_bulk_and_set_overrides(app: App, r: redis.Redis) -> None:
    @app.job()
    def one(i: int) -> None: ...

    jids = one.bulk_perform_async([[i] for i in range(2500)], batch_size=1000)
    assert len(set(jids)) == 2500
    assert r.llen("queue:default") == 2500
    one.set(queue="low", retry=False).perform_async(1)
    job = json.loads(r.rpop("queue:low") or "")
    assert job["retry"] is False


def test_bad_args_are_refused_and_nothing_is_pushed(app: App, r: redis.Redis) -> None:
    @app.job()
    def one(x: object) -> None: ...

    with pytest.raises(SerializationError, match=r"args\[0\] is a datetime.date"):
        one.perform_async(dt.date(2024, 1, 1))
    with pytest.raises(SerializationError, match=r"args\[0\]"):
        one.bulk_perform_async([[1], [2], [object()]])
    assert r.llen("queue:default") == 0


def test_unknown_options_fail_at_declaration(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"unknown job option.*qeue"):

        @app.job(qeue="x")
        def f() -> None: ...

    @app.job()
    def g() -> None: ...

    with pytest.raises(ConfigurationError, match=r"unknown job option.*priority"):
        g.set(priority=1).perform_async()
    with pytest.raises(ConfigurationError, match="retry=-1"):
        app.job(retry=-1)(lambda: None)


def test_duplicate_names_are_refused(app: App) -> None:
    @app.job(name="Same")
    def a() -> None: ...

    with pytest.raises(ConfigurationError, match="'Same' is already taken"):

        @app.job(name="Same")
        def b() -> None: ...


def test_enqueue_by_name_for_classes_only_another_process_knows(app: App, r: redis.Redis) -> None:
    app.enqueue("RubyOnlyWorker", 1, "two", queue="ruby")
    job = json.loads(r.rpop("queue:ruby") or "")
    assert job["class"] == "RubyOnlyWorker" and job["args"] == [1, "two"]


def test_client_middleware_runs_in_order_and_can_drop(app: App, r: redis.Redis) -> None:
    calls: list[str] = []

    class Stamp(ClientMiddleware):
        def before_enqueue(self, ctx: EnqueueContext) -> None:
            calls.append("stamp.before")
            ctx.job["stamped"] = True

        def after_enqueue(self, ctx: EnqueueContext) -> None:
            calls.append("stamp.after")

    class DropOdd(ClientMiddleware):
        def before_enqueue(self, ctx: EnqueueContext) -> None:
            calls.append("drop.before")
            if ctx.job["args"][0] % 2:
                ctx.drop("odd")

        def after_enqueue(self, ctx: EnqueueContext) -> None:
            calls.append("drop.after")

    app.client_middleware.add(Stamp())
    app.client_middleware.add(DropOdd())

    @app.job()
    def f(i: int) -> None: ...

    kept = f.perform_async(2)
    dropped = f.perform_async(3)
    assert kept and not dropped and dropped.dropped == "odd"
    assert calls == ["stamp.before", "drop.before", "drop.after", "stamp.after"] * 2
    assert [json.loads(x)["args"] for x in r.lrange("queue:default", 0, -1)] == [[2]]
    assert json.loads(r.lindex("queue:default", 0) or "")["stamped"] is True


def test_function_jobs_stay_callable(app: App) -> None:
    @app.job()
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5


def test_bulk_template_path_writes_the_same_bytes_as_the_per_job_path(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor import Settings
    from conveyor.core import client as client_mod

    app = App(Settings(redis_url=redis_url), clock=FakeClock(1_700_000_000.25))

    @app.job(queue="bulk", retry=3, backtrace=5, dead=False, tags=["a", "b"])
    def plain(*args: Any) -> None: ...

    rows = [[1, "x", 2.5], [1e20, {"k": [None, True]}], ['ü€ "quoted" \\ /'], []]
    four = ["a" * 24, "b" * 24, "c" * 24, "d" * 24]
    jids = iter([*four, "t" * 24, *four])  # "t": the bulk template's own, replaced
    monkeypatch.setattr(client_mod, "new_jid", lambda: next(jids))
    monkeypatch.setattr(client_mod, "new_jids", lambda n: [next(jids) for _ in range(n)])
    for args in rows:  # the per-job path: build, middleware context, _push
        plain.perform_async(*args)
    per_job = r.lrange("queue:bulk", 0, -1)
    r.delete("queue:bulk")
    assert not app.client._middleware_for(plain)
    plain.bulk_perform_async(rows, batch_size=3)
    assert r.lrange("queue:bulk", 0, -1) == per_job
    assert json.loads(per_job[1])["args"] == ['ü€ "quoted" \\ /']
    assert json.loads(per_job[-1])["dead"] is False
    app.close()


def test_bulk_schedules_and_names_unknown_classes(app: App, r: redis.Redis) -> None:
    at = app.clock.time() + 3600
    jids = app.client.enqueue_bulk("Ruby::Worker", [[1], [2]], {"queue": "ruby"}, at=at)
    assert r.llen("queue:ruby") == 0
    entries = r.zrange("schedule", 0, -1, withscores=True)
    assert [json.loads(p)["jid"] for p, _ in entries] == jids or sorted(jids) == sorted(
        json.loads(p)["jid"] for p, _ in entries
    )
    assert all(abs(score - at) < 1e-3 for _, score in entries)
    job = json.loads(entries[0][0])
    assert job["class"] == "Ruby::Worker" and "enqueued_at" not in job


def test_bulk_of_a_class_with_client_middleware_still_runs_it(app: App, r: redis.Redis) -> None:
    @app.job(idempotent=True)
    def once(i: int) -> None: ...

    assert app.client._middleware_for(once)
    jids = once.bulk_perform_async([[1], [1], [2]])
    assert len(jids) == 2  # the twin was dropped by deduplication
    assert r.llen("queue:default") == 2


# -- asyncio enqueue (issue 19) -------------------------------------------------------------------


def _enqueue_everything(app: App, plain: Any, once: Any) -> list[Any]:
    """The calls compared below, as (name, callable returning a coroutine or a result)."""
    floats = [1e-05, 1e16, 2.5, 1234567890123456.0, -0.0, 0.1 + 0.2]
    text = ['ü€ "quoted" \\ /', "\u2028", "😀", {"nested": ["ñ", None, True]}]
    low = plain.set(queue="low", retry=3, backtrace=4, dead=False, retry_queue="later")
    tagged = plain.set(tags=["a", "b"], wal_locations={"main": "16/B374D848"})
    return [
        ("floats", plain.perform_async, plain.aperform_async, floats),
        ("unicode", plain.perform_async, plain.aperform_async, text),
        ("options", low.perform_async, low.aperform_async, [1]),
        ("tags+wal", tagged.perform_async, tagged.aperform_async, [2]),
        ("dedup", once.perform_async, once.aperform_async, [3]),
    ]


def test_async_enqueue_writes_the_same_bytes_as_sync(
    r: redis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Must show (issue 19): aperform_async & co. write byte-identical payloads, through the
    same middleware (deduplication's Lua claim included), for floats, unicode, options,
    scheduled and bulk enqueues."""
    import asyncio

    from conveyor import Settings
    from conveyor.core import client as client_mod

    app = App(Settings(redis_url=redis_url), clock=FakeClock(1_700_000_000.25))

    @app.job()
    def plain(*args: Any) -> None: ...

    @app.job(idempotent=True)
    def once(*args: Any) -> None: ...

    def jid_sequence() -> None:
        jids = iter(f"{i:024x}" for i in range(1000))
        monkeypatch.setattr(client_mod, "new_jid", lambda: next(jids))
        monkeypatch.setattr(client_mod, "new_jids", lambda n: [next(jids) for _ in range(n)])

    def snapshot() -> dict[str, Any]:
        out: dict[str, Any] = {key: r.lrange(key, 0, -1) for key in sorted(r.keys("queue:*"))}
        out["schedule"] = r.zrange("schedule", 0, -1, withscores=True)
        out["dedup"] = sorted((k, r.hgetall(k)) for k in r.keys("conveyor:dedup:*"))
        out["queues"] = sorted(r.smembers("queues"))
        return out

    calls = _enqueue_everything(app, plain, once)
    jid_sequence()
    sync_results = [sync(*args) for _, sync, _, args in calls]
    sync_results.append(plain.perform_in(dt.timedelta(minutes=5), 4.5))
    sync_results.append(app.enqueue("Ruby::Worker", 1.5, "x", queue="ruby"))
    sync_results.append(once.perform_async(3))  # the twin: dropped
    sync_bulk = plain.bulk_perform_async([[1.0], ["ü"], []], batch_size=2)
    sync_bulk += once.bulk_perform_async([[7], [7], [8]])
    expected = snapshot()
    r.flushall()

    async def main() -> list[Any]:
        jid_sequence()
        out = [await asynchronous(*args) for _, _, asynchronous, args in calls]
        out.append(await plain.aperform_in(dt.timedelta(minutes=5), 4.5))
        out.append(await app.aenqueue("Ruby::Worker", 1.5, "x", queue="ruby"))
        out.append(await once.aperform_async(3))
        bulk = await plain.abulk_perform_async([[1.0], ["ü"], []], batch_size=2)
        bulk += await once.abulk_perform_async([[7], [7], [8]])
        out.append(bulk)
        await app.aclose()
        return out

    *async_results, async_bulk = asyncio.run(main())
    assert snapshot() == expected
    assert [(x.jid, x.queued, x.dropped) for x in async_results] == [
        (x.jid, x.queued, x.dropped) for x in sync_results
    ]
    assert async_bulk == sync_bulk and len(sync_bulk) == 5
    assert not sync_results[-1] and sync_results[-1].dropped.startswith("duplicate of")
    assert json.loads(expected["queue:low"][0])["retry_queue"] == "later"
    tagged = [json.loads(p) for p in expected["queue:default"] if '"tags"' in p]
    assert tagged[0]["wal_locations"] == {"main": "16/B374D848"}
    app.close()


def test_async_enqueue_works_from_several_event_loops(app: App, r: redis.Redis) -> None:
    """A redis.asyncio connection belongs to its loop: each asyncio.run gets its own client
    (and closes it with app.aclose(), as an ASGI lifespan would)."""
    import asyncio

    @app.job()
    def ping(n: int) -> None: ...

    async def one(n: int) -> bool:
        try:
            return bool(await ping.aperform_async(n))
        finally:
            await app.aclose()

    assert all(asyncio.run(one(n)) for n in range(3))
    assert r.llen("queue:default") == 3


def test_async_enqueue_honours_the_testing_modes(app: App, r: redis.Redis) -> None:
    import asyncio

    ran: list[int] = []

    @app.job()
    def work(n: int) -> None:
        ran.append(n)

    with app.testing.inline():
        asyncio.run(work.aperform_async(5))
    assert ran == [5] and r.llen("queue:default") == 0
