from __future__ import annotations

import json
import threading

import redis

from conveyor import App, Job
from conveyor.core.payload import dumps
from conveyor.core.recovery import sweep


def orphan(app: App, r: redis.Redis, identity: str, jobs: list[dict[str, object]]) -> None:
    """Make ``identity`` look like a process that died holding ``jobs``."""
    keys = app.store.keys
    r.sadd(keys.working_registry, identity)
    for job in jobs:
        r.lpush(keys.working(identity), dumps(job))


def job(i: int, **extra: object) -> dict[str, object]:
    return {"class": "Work", "args": [i], "queue": "q", "jid": f"{i:024x}", **extra}


def test_dead_process_jobs_go_back_to_the_front_of_their_queue(app: App, r: redis.Redis) -> None:
    r.lpush("queue:q", dumps(job(99)))
    orphan(app, r, "host:1:dead", [job(1), job(2, interrupted_count=1), job(3, queue="other")])
    report = sweep(app)
    assert (report.requeued, report.parked, report.processes) == (3, 0, ["host:1:dead"])
    q = [json.loads(x) for x in r.lrange("queue:q", 0, -1)]
    assert q[0]["args"] == [99]  # recovered jobs sit at the consuming (right) end
    assert {x["args"][0]: x.get("interrupted_count") for x in q[1:]} == {1: 1, 2: 2}
    assert json.loads(r.rpop("queue:other") or "")["interrupted_count"] == 1
    assert not r.exists(app.store.keys.working("host:1:dead"))
    assert not r.sismember(app.store.keys.working_registry, "host:1:dead")
    assert sweep(app).requeued == 0  # idempotent


def test_live_processes_are_left_alone(app: App, r: redis.Redis) -> None:
    orphan(app, r, "host:2:alive", [job(1)])
    r.set(app.store.keys.liveness("host:2:alive"), "1", px=5000)
    assert sweep(app).requeued == 0
    assert r.llen(app.store.keys.working("host:2:alive")) == 1


def test_jobs_past_the_interruption_limit_are_parked(app: App, r: redis.Redis) -> None:
    parked: list[dict[str, object]] = []
    app.interrupted_handlers.append(parked.append)

    @app.job(name="Patient", max_retries_after_interruption=-1)
    class Patient(Job):
        def perform(self, i: int) -> None: ...

    @app.job(name="Fragile", max_retries_after_interruption=0)
    class Fragile(Job):
        def perform(self, i: int) -> None: ...

    orphan(
        app,
        r,
        "host:3:dead",
        [
            job(1, interrupted_count=3),  # global limit 3: the 4th interruption parks it
            job(2, interrupted_count=2),
            {**job(3, interrupted_count=50), "class": "Patient"},
            {**job(4), "class": "Fragile"},
        ],
    )
    r.lpush(app.store.keys.working("host:3:dead"), "not json at all")
    report = sweep(app)
    assert (report.requeued, report.parked) == (2, 2)
    assert sorted(json.loads(x)["args"][0] for x in r.lrange("queue:q", 0, -1)) == [2, 3]
    [malformed] = [json.loads(x) for x in r.zrange("dead", 0, -1)]
    assert malformed["args"] == ["not json at all"]  # kept, with the reason, for a human
    assert "not valid JSON" in malformed["error_message"]
    assert sorted(p["args"][0] for p in parked) == [1, 4]  # type: ignore[index]
    assert all(p["interrupted_count"] for p in parked)


def test_concurrent_sweeps_never_duplicate(app: App, r: redis.Redis, settings: object) -> None:
    for n in range(5):
        orphan(app, r, f"host:{n}:dead", [job(n * 100 + i) for i in range(100)])
    apps = [App(app.settings) for _ in range(4)]
    threads = [threading.Thread(target=sweep, args=(a,)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()
    requeued = [json.loads(x)["args"][0] for x in r.lrange("queue:q", 0, -1)]
    assert sorted(requeued) == list(range(500))


def test_interrupted_set_is_capped(app: App, r: redis.Redis) -> None:
    app.configure(app.settings.replace(interrupted_max_jobs=5, max_retries_after_interruption=0))
    orphan(app, r, "host:9:dead", [job(i) for i in range(8)])
    assert sweep(app).parked == 8
    assert r.zcard("interrupted") == 5
