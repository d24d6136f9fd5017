"""The slot script's batch layout (conveyor/redis/limits.py, lua/limit.lua): jobs grouped by
class in one call, replies back in the caller's order."""

from __future__ import annotations

import time

import redis
from support import live_process_holding

from conveyor import App
from conveyor.redis.limits import DEFERRED, TAKEN, TAKEN_SCARCE, Acquire, LimitStore


def test_a_batch_of_interleaved_classes_gets_its_replies_in_order(app: App, r: redis.Redis) -> None:
    store = LimitStore(app.store)
    keys = app.store.keys
    me = "host:1:me"
    r.set(keys.liveness(me), "1", px=10_000)
    wanted = [("a", 2), ("b", 10), ("a", 2), ("b", 10), ("a", 2)]
    raws = [
        f'{{"class":"{c}","args":[{i}],"jid":"j{i}","queue":"q"}}'
        for i, (c, _) in enumerate(wanted)
    ]
    r.lpush(keys.working(me), *raws)
    got = store.acquire_many(
        [Acquire(c, limit, me, f"j{i}", raws[i]) for i, (c, limit) in enumerate(wanted)],
        time.time(),
    )
    # a: one slot, then the second (2 of 2 is scarce), then deferred; b: plenty of room.
    assert got == [TAKEN, TAKEN, TAKEN_SCARCE, TAKEN, DEFERRED]
    assert r.zrange(keys.limit_running("a"), 0, -1) == [f"{me}|j0", f"{me}|j2"]
    assert r.lrange(keys.limit_deferred("a"), 0, -1) == [raws[4]]
    assert raws[4] not in r.lrange(keys.working(me), 0, -1), "moved in the same step"
    # Freeing slots of both classes (and a resume-only entry) in one call resumes a's job.
    resumed = store.release_many(
        [("a", 2, f"{me}|j0"), ("b", 10, f"{me}|j1"), ("b", 10, f"{me}|j3"), ("a", 2, "")],
        time.time(),
        300,
    )
    assert resumed == 1
    assert r.lrange("queue:q", 0, -1) == [raws[4]]
    assert r.zcard(keys.limit_running("b")) == 0
    assert set(r.zrange(keys.limit_running("a"), 0, -1)) == {"~|j4", f"{me}|j2"}


def test_a_release_of_9000_slots_fits_in_one_call(app: App, r: redis.Redis) -> None:
    # The script frees members in chunks: Lua's unpack stack holds about 8,000 values.
    store = LimitStore(app.store)
    keys = app.store.keys
    members = [f"host:1:me|j{i}" for i in range(9000)]
    r.zadd(keys.limit_running("c"), dict.fromkeys(members, 1.0))
    assert store.release_many([("c", 5000, m) for m in members], time.time(), 300) == 0
    assert r.zcard(keys.limit_running("c")) == 0


def test_a_resumed_job_s_reserved_slot_is_scarce_only_while_others_still_wait(
    app: App, r: redis.Redis
) -> None:
    # A process that takes a resumed job's reserved slot keeps no slot unused while that says
    # scarce: the last resumed job must not keep saying it once nobody waits.
    store = LimitStore(app.store)
    keys = app.store.keys
    me = "host:1:me"
    raws = live_process_holding(app, r, me, 3)
    now = time.time()
    got = store.acquire_many([Acquire("c", 1, me, f"j{i}", raws[i]) for i in range(3)], now)
    assert got == [TAKEN_SCARCE, DEFERRED, DEFERRED]
    assert store.release("c", 1, now, 300, f"{me}|j0") == 1  # j1 resumed, j2 still waits
    r.lpush(keys.working(me), raws[1])
    assert store.acquire_many([Acquire("c", 1, me, "j1", raws[1])], now) == [TAKEN_SCARCE]
    assert store.release("c", 1, now, 300, f"{me}|j1") == 1  # j2 resumed, nobody waits
    r.lpush(keys.working(me), raws[2])
    assert store.acquire_many([Acquire("c", 1, me, "j2", raws[2])], now) == [TAKEN]
    # The tend mode frees like a release and says whether jobs waited.
    assert store.tend([("c", 1, f"{me}|j2")], now, 300) == (0, {"c": False})
    assert r.zcard(keys.limit_running("c")) == 0
