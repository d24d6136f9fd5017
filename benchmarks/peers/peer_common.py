"""What every peer's job module shares: the Redis the jobs report to, the two job bodies, and the
entry point the harness runs (``python -m peer_common enqueue|worker NAME ...``, with this
directory on ``PYTHONPATH`` so that each library imports its jobs by a stable module name).

The jobs time themselves, as in benchmarks/core.py's no-op drain:

- ``noop(index)`` does nothing, except that index 0 (pushed first) and -1 (a marker pushed last)
  write the wall-clock time they ran to ``bench:first`` / ``bench:last``;
- ``sleep(total)`` sleeps 10 ms, then ``INCR bench:done``; the job that sees 1 writes
  ``bench:first``, the one that sees ``total`` writes ``bench:last`` (completion order, so
  concurrent jobs finishing out of order do not matter; the harness counts the jobs after the
  first wave of 10);
- ``incr(total)`` is the I/O workload, the shape of a real job: one ``INCR bench:done`` on the
  job's own client, one per worker thread on a connection of its own, as the Ruby Sidekiq job
  does (``Thread.current[:bench_redis] ||= Redis.new``, sidekiq_jobs.rb); with
  ``BENCH_JOB_CLIENT=pooled``, one redis-py client shared by the threads (its connection pool:
  a pool checkout and return around each call, the figures before 2026-12-05). The harness
  reads the counter (``aincr``: the same on ``redis.asyncio``);
- ``latency(sent)`` pushes ``now - sent`` (seconds) onto ``bench:latency``; the producer sends
  one job at a time, paced at ``BENCH_RATE`` jobs/s.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
import redis.asyncio

SLEEP_S = 0.010
BATCH = 1000
#: The I/O workload's job client: one per thread (the default), or one shared, pooled client.
POOLED = os.environ.get("BENCH_JOB_CLIENT") == "pooled"


def url() -> str:
    return os.environ["BENCH_REDIS_URL"]


@functools.cache
def client() -> redis.Redis:
    # Created on first use, so a forking worker (RQ, Celery prefork) gets one per child.
    return redis.Redis.from_url(url())


@functools.cache
def aclient() -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url())


def noop(index: int) -> None:
    if index in (0, -1):
        client().set("bench:first" if index == 0 else "bench:last", time.time())


def sleep(total: int) -> None:
    time.sleep(SLEEP_S)
    done = client().incr("bench:done")
    if done in (1, total):
        client().set("bench:first" if done == 1 else "bench:last", time.time())


_thread = threading.local()


def thread_client() -> redis.Redis:
    """This thread's own client on one connection of its own (made on first use)."""
    own: redis.Redis | None = getattr(_thread, "client", None)
    if own is None:
        own = _thread.client = redis.Redis.from_url(url(), single_connection_client=True)
    return own


def incr(total: int) -> None:
    (client() if POOLED else thread_client()).incr("bench:done")


async def aincr(total: int) -> None:
    await aclient().incr("bench:done")


def latency(sent: float) -> None:
    client().rpush("bench:latency", time.time() - sent)


async def anoop(index: int) -> None:
    if index in (0, -1):
        await aclient().set("bench:first" if index == 0 else "bench:last", time.time())


async def asleep(total: int) -> None:
    await asyncio.sleep(SLEEP_S)
    done = await aclient().incr("bench:done")
    if done in (1, total):
        await aclient().set("bench:first" if done == 1 else "bench:last", time.time())


async def alatency(sent: float) -> None:
    await aclient().rpush("bench:latency", time.time() - sent)


def paced(jobs: int) -> Iterator[float]:
    """The send time of each latency job, yielded at ``BENCH_RATE`` jobs/s."""
    interval = 1.0 / float(os.environ["BENCH_RATE"])
    started = time.perf_counter()
    for i in range(jobs):
        delay = started + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield time.time()


def arguments(kind: str, jobs: int) -> Iterable[Any]:
    """The argument of each job: indexes ending with the -1 marker, the total for sleeps, or
    the send time, paced, for latency."""
    if kind in ("sleep", "incr", "aincr"):
        return [jobs] * jobs
    if kind == "latency":
        return paced(jobs)
    return [*range(jobs - 1), -1]


def timed(push: Callable[[Iterable[Any]], object], kind: str, jobs: int) -> float:
    args = arguments(kind, jobs)
    started = time.perf_counter()
    push(args)
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    command, name, *rest = argv
    module = importlib.import_module(f"{name}_jobs")
    if command == "enqueue":
        kind, jobs = rest[0], int(rest[1])
        print(json.dumps({"seconds": module.enqueue(kind, jobs)}))
    elif command == "worker":
        module.work(*rest)
    else:
        raise SystemExit(f"unknown command {command!r}: use enqueue or worker")


if __name__ == "__main__":
    main(sys.argv[1:])
