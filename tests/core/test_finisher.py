"""Batched acknowledgement: jobs leave the working list with their retry/dead entries and
stats; a failed attempt keeps the batch; the start boundary is published with it."""

from __future__ import annotations

import json

import pytest
import redis

from conveyor import App, Settings
from conveyor.core import processor as settle_module
from conveyor.core.finisher import Counters, Finisher
from conveyor.core.payload import dumps
from conveyor.core.processor import Processor
from conveyor.core.units import Units
from conveyor.redis import Outcome


def setup(app: App, r: redis.Redis, count: int) -> tuple[Finisher, Processor, list[str]]:
    raws = [dumps({"class": "A", "args": [i], "jid": f"j{i}"}) for i in range(count)]
    for raw in raws:
        r.lpush(app.store.keys.working("host:1:abc"), raw)
    units = Units(4, 2, concurrency=2, clock=app.clock)
    units.hold(raws)
    return Finisher(app, "host:1:abc", Counters(), units), Processor(app), raws


def test_a_batch_is_acknowledged_in_one_step(app: App, r: redis.Redis) -> None:
    finisher, processor, raws = setup(app, r, 3)
    finisher.add(Outcome("ok", raws[0]), processor.fetched("default", raws[0]))
    finisher.add(Outcome("retry", raws[1], 123.0, "{}"), processor.fetched("default", raws[1]))
    now = app.clock.time()
    finisher.add(Outcome("dead", raws[2], now, raws[2]), processor.fetched("default", raws[2]))
    finisher.flush()
    assert r.llen(app.store.keys.working("host:1:abc")) == 0
    assert r.zrange("retry", 0, -1, withscores=True) == [("{}", 123.0)]
    assert [json.loads(m)["jid"] for m in r.zrange("dead", 0, -1)] == ["j2"]
    assert r.get("stat:processed") == "3" and r.get("stat:failed") == "2"
    assert finisher.counters.processed == 3 and finisher.units.unheld(raws)[0] == dict.fromkeys(
        raws, 1
    )


def test_a_failed_attempt_keeps_the_batch_for_the_next(app: App, r: redis.Redis) -> None:
    finisher, processor, raws = setup(app, r, 1)
    down = App(Settings(redis_url="redis://127.0.0.1:1/0"))  # nothing listens there
    finisher.store = down.store
    finisher.add(Outcome("ok", raws[0]), processor.fetched("default", raws[0]))
    with pytest.raises(redis.ConnectionError):
        finisher.flush()
    assert finisher.units._confirmed == -1, "no job starts while the boundary is unknown"
    finisher.store = app.store
    finisher.flush()
    assert r.llen(app.store.keys.working("host:1:abc")) == 0 and r.get("stat:processed") == "1"
    down.close()


def test_the_start_boundary_rides_on_the_acknowledgement(app: App, r: redis.Redis) -> None:
    finisher, processor, raws = setup(app, r, 5)
    finisher.units.add([processor.fetched("default", raw) for raw in raws[1:]])
    finisher.add(Outcome("ok", raws[0]), processor.fetched("default", raws[0]))
    finisher.flush()
    # One job acknowledged: two permits ahead, so the boundary is the third waiting job.
    assert r.get(app.store.keys.boundary("host:1:abc")) == raws[3]


def test_a_suspect_is_permitted_only_with_the_jobs_before_it_acknowledged(
    app: App, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last job ahead of a suspect finishes while an acknowledgement is under way (after
    # its batch was taken): the suspect is handed out then, and the boundary published by
    # that call may permit it. That call must carry the late job's acknowledgement too, or
    # the suspect's crash finds the finished job in the working list and counts it as
    # interrupted (a second time, after the crash that made the suspect).
    finisher, processor, raws = setup(app, r, 2)
    suspect = dumps({"class": "A", "args": [], "jid": "s", "interrupted_count": 1})
    after = dumps({"class": "A", "args": [], "jid": "t"})
    for raw in (suspect, after):
        r.lpush(app.store.keys.working("host:1:abc"), raw)
    units = finisher.units
    units.hold([suspect, after])
    units.add([processor.fetched("default", raw) for raw in (*raws, suspect, after)])
    (seq_a, a), (seq_c, c) = units.take(), units.take()  # type: ignore[misc]
    finisher.add(Outcome("ok", a.raw), a, 0.001)
    units.done(seq_a, 0.001)
    real_settle = settle_module.settle

    def c_finishes_meanwhile(*args: object, **kwargs: object) -> object:
        if not finished_c:
            finished_c.append(1)
            finisher.add(Outcome("ok", c.raw), c, 0.001)
            units.done(seq_c, 0.001)  # hands the suspect out
        return real_settle(*args, **kwargs)  # type: ignore[arg-type]

    finished_c: list[int] = []
    monkeypatch.setattr("conveyor.core.finisher.settle", c_finishes_meanwhile)
    finisher.flush()
    seq_s, unit = units.take()  # type: ignore[misc]
    assert unit.raw == suspect
    assert units.may_start(seq_s, suspect), "the publication permits the suspect"
    assert c.raw not in r.lrange(app.store.keys.working("host:1:abc"), 0, -1), (
        "the job that finished before the suspect was handed out is acknowledged"
    )
