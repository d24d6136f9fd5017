"""Crash tests with real worker processes killed by real signals (SPEC CORE-3, CORE-7)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import pytest
import redis
from support import APPS, StartProcess, wait_for

from conveyor import App, Settings

APP = str(APPS / "crash_app.py")


Spawn = Callable[..., "subprocess.Popen[bytes]"]


@pytest.fixture
def spawn(redis_url: str, processes: StartProcess) -> Spawn:
    def start(**env: str) -> subprocess.Popen[bytes]:
        return processes(APP, CONVEYOR_REDIS_URL=redis_url, **env)

    return start


def enqueue(redis_url: str, jobs: list[tuple[int, float]]) -> None:
    app = App(Settings(redis_url=redis_url))
    for i, seconds in jobs:
        app.enqueue("Sleepy", i, seconds)
    app.close()


def starts(r: redis.Redis) -> list[tuple[int, int, float]]:
    out = []
    for entry in r.lrange("starts", 0, -1):
        i, pid, at = entry.split(":")
        out.append((int(i), int(pid), float(at)))
    return out


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_sigkill_mid_job_every_job_runs_again_within_30s(
    spawn: Spawn, r: redis.Redis, redis_url: str
) -> None:
    """Default heartbeat, liveness and recovery intervals: the production bound is what we test."""
    victim = spawn(CONVEYOR_CONCURRENCY="5")
    enqueue(redis_url, [(i, 1.5) for i in range(20)])
    wait_for(lambda: len(starts(r)) >= 5, timeout=15)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait(5)
    in_flight = {i for i, pid, _ in starts(r) if pid == victim.pid}
    assert in_flight, "the victim should have been running jobs"
    assert not r.hgetall("completions").keys() & {str(i) for i in in_flight}

    survivor = spawn(CONVEYOR_CONCURRENCY="5")
    wait_for(lambda: len(r.hgetall("completions")) == 20, timeout=60, interval=0.2)
    completions = {int(k): int(v) for k, v in r.hgetall("completions").items()}
    assert completions == {i: 1 for i in range(20)}, "every job completed exactly once"
    reruns = [at for i, pid, at in starts(r) if pid == survivor.pid and i in in_flight]
    assert len(reruns) == len(in_flight), "every interrupted job ran again on the survivor"
    assert min(reruns) - killed_at < 30, f"recovered after {min(reruns) - killed_at:.1f}s"
    recovered = [r.hget("completions", str(i)) for i in in_flight]
    assert all(c == "1" for c in recovered)
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_sigterm_finishes_short_jobs_and_requeues_long_ones(
    spawn: Spawn, r: redis.Redis, redis_url: str
) -> None:
    worker = spawn(CONVEYOR_CONCURRENCY="4", CONVEYOR_SHUTDOWN_TIMEOUT="2")
    enqueue(redis_url, [(0, 0.5), (1, 0.5), (2, 60), (3, 60)])
    wait_for(lambda: len(starts(r)) == 4, timeout=15)
    worker.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert worker.wait(15) == 0
    took = time.monotonic() - sent
    assert took < 2 + 3, f"shutdown took {took:.1f}s for a 2s deadline"
    assert r.hgetall("completions") == {"0": "1", "1": "1"}
    requeued = sorted(r.lrange("queue:default", 0, -1))
    assert len(requeued) == 2, "the two long jobs are back on the queue"
    assert r.scard("processes") == 0
    assert not r.keys("conveyor:working:*"), "nothing left in a working list"

    r.set("fast", 1)
    finisher = spawn()
    wait_for(lambda: len(r.hgetall("completions")) == 4, timeout=15)
    assert r.hgetall("completions") == {"0": "1", "1": "1", "2": "1", "3": "1"}
    finisher.send_signal(signal.SIGINT)
    assert finisher.wait(15) == 0
