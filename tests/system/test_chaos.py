"""Chaos (issue #14): >= 20,000 jobs, 3 worker processes, >= 10 random SIGKILLs, a Redis restart
(append-only file on, so the data survives it), poison payloads and a process-killing job mixed
in. Every accepted job must run at least once or sit in retry/dead/interrupted with a reason,
no working list may keep anything, and every worker must still process jobs at the end.

Prints the figures: jobs, kills, duplicates, time from the last kill to its last orphan done.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from support import APPS, StartProcess, free_port, wait_for
from support.servers import RedisServer

from conveyor import App, Job, Settings
from conveyor.core.payload import parse
from conveyor.errors import PayloadError

APP = str(APPS / "reliability_app.py")
JOBS = 20_000
KILLS = 10
ENV = {
    "CONVEYOR_CONCURRENCY": "10",
    "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
    "CONVEYOR_LIVENESS_TTL": "2",
    "CONVEYOR_RECOVERY_INTERVAL": "0.5",
    "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.5",
    "TICK_SECONDS": "0.03",  # so the kills land while jobs run: ~20 s of work for 3 workers
}
POISON = [
    b'{"class":"Tick","args":["\xff\xfe"],"jid":"p-utf8"}',
    b'{"class":"Tick","args":[NaN],"jid":"p-nan"}',
    b'{"class":"Tick","args":[1e999],"jid":"p-inf"}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"class":"Tick","args":["\\udcff"],"jid":"p-surrogate"}',
    b"not json",
]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    srv = RedisServer(free_port(), tmp_path / "redis")
    srv.start()
    yield srv
    srv.kill()


def working(client: redis.Redis) -> dict[str, list[bytes]]:
    return {
        k.decode(): client.lrange(k, 0, -1) for k in client.scan_iter(match="conveyor:working:*")
    }


def tick_ids(entries: list[bytes]) -> set[int]:
    out = set()
    for raw in entries:
        try:
            job = parse(raw)
        except PayloadError:
            continue
        if job["class"] == "Tick":
            out.add(int(job["args"][0]))
    return out


def unleash(
    workers: list[subprocess.Popen[bytes]],
    spawn: Callable[[], subprocess.Popen[bytes]],
    server: RedisServer,
    raw: redis.Redis,
) -> tuple[int, float, set[int]]:
    """SIGKILL a random worker every 0.8-2 s (restarting it, as a supervisor would) until
    :data:`KILLS` kills, with a Redis restart half-way; returns the kills, the time of the
    last one and the jobs in the working lists right after it (its orphans among them)."""
    rng = random.Random(14)
    kills, last_kill, restarted = 0, 0.0, False
    orphans: set[int] = set()
    while kills < KILLS:
        time.sleep(rng.uniform(0.8, 2.0))
        for n, proc in enumerate(workers):
            if proc.poll() is not None:  # the poison job killed it
                workers[n] = spawn()
        if kills == KILLS // 2 and not restarted:
            server.stop()  # SIGTERM: the append-only file is flushed
            time.sleep(2)
            server.start()
            restarted = True
            continue
        n = rng.randrange(len(workers))
        if workers[n].poll() is None:
            workers[n].send_signal(signal.SIGKILL)
            workers[n].wait(10)
            kills += 1
            last_kill = time.monotonic()
            orphans = set().union(*map(tick_ids, working(raw).values()))
        workers[n] = spawn()
    return kills, last_kill, orphans


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_chaos(
    server: RedisServer, r: redis.Redis, redis_url: str, processes: StartProcess
) -> None:
    app = App(Settings(redis_url=server.url))

    @app.job(name="Tick")
    class Tick(Job):
        def perform(self, i: int) -> None: ...

    for start in range(0, JOBS, 1000):
        Tick.bulk_perform_async([[i] for i in range(start, start + 1000)])
    app.enqueue("Poison")
    raw = redis.Redis.from_url(server.url)
    for payload in POISON:
        raw.lpush("queue:default", payload)

    def spawn() -> subprocess.Popen[bytes]:
        return processes(APP, CONVEYOR_REDIS_URL=server.url, SIDE_REDIS_URL=redis_url, **ENV)

    workers = [spawn() for _ in range(3)]
    began = time.monotonic()
    kills, last_kill, orphans = unleash(workers, spawn, server, raw)

    def ticks() -> dict[str, str]:
        return r.hgetall("ticks")  # type: ignore[return-value]

    def supervise(check: Callable[[], bool]) -> Callable[[], bool]:
        def step() -> bool:
            for n, proc in enumerate(workers):
                if proc.poll() is not None:  # the poison job killed it: restart it
                    workers[n] = spawn()
            return check()

        return step

    wait_for(supervise(lambda: orphans <= {int(i) for i in ticks()}), timeout=180, interval=0.2)
    orphans_done = time.monotonic()
    wait_for(supervise(lambda: len(ticks()) == JOBS), timeout=180, interval=0.5)
    done = ticks()
    wait_for(supervise(lambda: raw.zcard("interrupted") >= 1), timeout=90, interval=0.5)
    wait_for(supervise(lambda: not any(working(raw).values())), timeout=60, interval=0.5)

    # Every accepted job ran at least once, or sits in dead/interrupted with a reason.
    assert set(map(int, done)) == set(range(JOBS))
    duplicates = sum(int(v) for v in done.values()) - JOBS
    dead = [json.loads(m) for m in raw.zrange("dead", 0, -1)]
    assert len(dead) == len(POISON) and all(d["error_message"] for d in dead)
    parked = [json.loads(m) for m in raw.zrange("interrupted", 0, -1)]
    assert [p["class"] for p in parked] == ["Poison"], "the process-killing job parked alone"
    assert raw.zcard("retry") == 0 and raw.llen("queue:default") == 0

    # Every worker still processes jobs at the end.
    live = [w for w in workers if w.poll() is None]
    assert len(live) == 3
    app.close()
    app = App(Settings(redis_url=server.url))
    for i in range(90):
        app.enqueue("Work", i, 0.2)
    wait_for(lambda: len(r.hgetall("done")) == 90, timeout=60, interval=0.2)
    pids = {int(s.split(":")[1]) for s in r.lrange("starts", 0, -1)}
    assert pids == {w.pid for w in live}, "each of the 3 workers ran some of the last jobs"
    app.close()
    raw.close()
    print(
        f"\nchaos: {JOBS} jobs + {len(POISON)} poison payloads + 1 process-killing job, "
        f"{kills} SIGKILLs, 1 Redis restart, {duplicates} duplicate runs, "
        f"{len(orphans)} orphans of the last kill done {orphans_done - last_kill:.1f}s after it "
        f"(whole run {orphans_done - began:.1f}s)"
    )
