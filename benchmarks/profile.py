"""Where a worker's CPU goes on the I/O workload (one ``INCR`` of the job's own per job).

    python -m benchmarks.profile [--mode threads|asyncio] [-c 10] [--jobs 20000] [--top 25]

Starts its own ``redis-server``, pre-fills ``--jobs`` jobs (``PeerIncr``, or ``PeerIncrAsync``
in asyncio mode or with ``--async-jobs``), and drains them with a burst worker in this process
under yappi (CPU clock, every thread). Prints, per job: worker CPU, the fetch and finish
round trips and their batch sizes (counted by wrapping the store's methods), and the functions
with the most CPU (inclusive and own time) in µs per job. Profilers slow Python down, so the
absolute figures are higher than the benchmark's; the shares are what count.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yappi

from benchmarks.harness import Children, pick_redis_server, redis_url, start_redis

HERE = Path(__file__).resolve().parent


class Calls:
    """Counts calls of a wrapped method and the batch size each call carried."""

    def __init__(self) -> None:
        self.sizes: Counter[int] = Counter()

    def sync(self, func: Callable[..., Any], size: Callable[..., int]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            self.sizes[size(args, result)] += 1
            return result

        return wrapper

    def aio(self, func: Callable[..., Any], size: Callable[..., int]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = await func(*args, **kwargs)
            self.sizes[size(args, result)] += 1
            return result

        return wrapper

    def summary(self, jobs: int) -> str:
        calls = sum(self.sizes.values())
        if not calls:
            return "no calls"
        sizes = list(self.sizes.elements())
        return (
            f"{calls:,} calls ({calls / jobs:.2f} per job); batch size mean "
            f"{statistics.fmean(sizes):.1f}, median {statistics.median(sizes):g}, "
            f"max {max(sizes)}; {self.sizes[1]:,} calls of 1"
        )


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(HERE / "peers"))
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-profile-"))
    children = Children(workdir)
    try:
        client = start_redis(children, pick_redis_server(None), workdir)
        os.environ["BENCH_REDIS_URL"] = redis_url(client)
        os.environ["CONVEYOR_CONCURRENCY"] = str(args.concurrency)
        os.environ["CONVEYOR_WORKER_MODE"] = args.mode
        import conveyor_jobs  # the peers' job module, configured by the variables above

        from conveyor.core.modes import create_worker

        app = conveyor_jobs.app
        asynchronous = args.mode == "asyncio" or args.async_jobs
        name = "PeerNoop" if args.noop else "PeerIncr"
        job = app.registry[f"{name}Async" if asynchronous else name]
        if args.limit:  # the same job under a concurrency limit (SPEC LIMIT-1)
            job = app.register(
                type(f"{name}Limited", (job,), {"__module__": job.__module__}),
                concurrency_limit=args.limit,
            )
        # PeerNoop's argument is an index: 1 (never 0 or -1) makes it a true no-op.
        job.bulk_perform_async([[1 if args.noop else args.jobs]] * args.jobs, batch_size=1000)
        thread_cpu = _record_thread_cpu()
        worker = create_worker(app, burst=True)
        fetches, finishes = Calls(), Calls()
        if args.mode == "asyncio":
            _wrap_aio(worker, fetches, finishes)
        else:
            store = app.store
            store.fetch = fetches.sync(store.fetch, lambda a, r: len(r))  # type: ignore[method-assign]
            store.finish = finishes.sync(store.finish, lambda a, r: len(list(a[1])))  # type: ignore[method-assign]
        yappi.set_clock_type("cpu")
        started, cpu0 = time.perf_counter(), time.process_time()
        me = psutil.Process()
        times0, switches0 = me.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
        if not args.no_profiler:
            yappi.start(builtins=True)
        thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
        thread.start()
        thread.join()
        yappi.stop()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        times1, switches1 = me.cpu_times(), resource.getrusage(resource.RUSAGE_SELF)
        done = int(client.get("stat:processed") or 0)
        jobs = args.jobs
        report(args, elapsed=elapsed, cpu=cpu, fetches=fetches, finishes=finishes, done=done)
        print(
            f"user {(times1.user - times0.user) * 1e6 / jobs:,.0f} µs/job, system "
            f"{(times1.system - times0.system) * 1e6 / jobs:,.0f} µs/job; context switches per "
            f"job: {(switches1.ru_nvcsw - switches0.ru_nvcsw) / jobs:.2f} voluntary, "
            f"{(switches1.ru_nivcsw - switches0.ru_nivcsw) / jobs:.2f} involuntary"
        )
        print(by_role(thread_cpu, jobs))
        app.close()
    finally:
        children.close()


def by_role(thread_cpu: dict[str, tuple[float, int]], jobs: int) -> str:
    """The threads' CPU and voluntary context switches per job, the worker threads summed."""
    roles: dict[str, tuple[float, int]] = {}
    for name, (seconds, switches) in thread_cpu.items():
        role = "worker threads" if name.startswith("conveyor-worker-") else name
        was = roles.get(role, (0.0, 0))
        roles[role] = (was[0] + seconds, was[1] + switches)
    return "CPU by thread, µs per job (voluntary switches per job): " + ", ".join(
        f"{n} {s * 1e6 / jobs:,.1f} ({v / jobs:.2f})" for n, (s, v) in sorted(roles.items())
    )


def _record_thread_cpu() -> dict[str, tuple[float, int]]:
    """CPU time and voluntary context switches of every thread started from now on, by thread
    name, read as each ends."""
    seconds: dict[str, tuple[float, int]] = {}
    run = threading.Thread.run

    def timed(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            cpu, switches = seconds.get(self.name, (0.0, 0))
            usage = resource.getrusage(resource.RUSAGE_THREAD)
            seconds[self.name] = (cpu + time.thread_time(), switches + usage.ru_nvcsw)

    threading.Thread.run = timed  # type: ignore[method-assign]
    return seconds


def _wrap_aio(worker: Any, fetches: Calls, finishes: Calls) -> None:
    # The async store is created on the loop: wrap its class's methods for this run.
    from conveyor.redis.aio_store import AioStore

    AioStore.fetch = fetches.aio(AioStore.fetch, lambda a, r: len(r))  # type: ignore[method-assign]
    AioStore.finish = finishes.aio(AioStore.finish, lambda a, r: len(list(a[2])))  # type: ignore[method-assign]


def report(
    args: argparse.Namespace,
    *,
    elapsed: float,
    cpu: float,
    fetches: Calls,
    finishes: Calls,
    done: int,
) -> None:
    jobs = args.jobs
    kind = "no-op" if args.noop else "INCR"
    print(f"mode {args.mode}, -c {args.concurrency}, {jobs:,} {kind} jobs ({done:,} acknowledged)")
    how = "without a profiler" if args.no_profiler else "under yappi"
    print(f"{how}: {jobs / elapsed:,.0f} jobs/s, CPU {cpu * 1e6 / jobs:,.0f} µs/job")
    print(f"fetch (non-blocking fetch.lua): {fetches.summary(jobs)}")
    print(f"finish (finish.lua): {finishes.summary(jobs)}")
    if args.no_profiler:
        return
    stats = yappi.get_func_stats()
    for sort, label in (("ttot", "inclusive"), ("tsub", "own")):
        stats.sort(sort, "desc")
        print(f"\ntop {args.top} functions by {label} CPU, µs per job (calls per job):")
        for row in list(stats)[: args.top]:
            where = f"{Path(row.module).name}:{row.lineno}" if row.module else ""
            value = row.ttot if sort == "ttot" else row.tsub
            print(f"  {value * 1e6 / jobs:8.1f}  ({row.ncall / jobs:6.2f})  {row.name}  {where}")
    threads = yappi.get_thread_stats()
    print("\nCPU per thread, µs per job:")
    for t in sorted(threads, key=lambda t: -t.ttot):
        print(f"  {t.ttot * 1e6 / jobs:8.1f}  {t.name}")


def baseline(url: str, calls: int) -> None:
    """The job's own call alone: CPU per INCR of redis-py from 1 and 10 threads, and of
    redis.asyncio from 1 and 10 tasks on one loop, without any job system."""
    import asyncio

    import redis
    import redis.asyncio

    for threads in (1, 10):
        client = redis.Redis.from_url(url)

        def loop(n: int, c: redis.Redis = client) -> None:
            for _ in range(n):
                c.incr("bench:baseline")

        cpu0, t0 = time.process_time(), time.perf_counter()
        pool = [threading.Thread(target=loop, args=(calls // threads,)) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
        print(
            f"redis-py, {threads:2} thread(s): {cpu * 1e6 / calls:5.0f} µs CPU per INCR, "
            f"{calls / wall:,.0f} calls/s"
        )
        client.close()

    async def tasks(n: int) -> tuple[float, float]:
        client = redis.asyncio.Redis.from_url(url)

        async def one(k: int) -> None:
            for _ in range(k):
                await client.incr("bench:baseline")

        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(calls // n) for _ in range(n)))
        result = time.process_time() - cpu0, time.perf_counter() - t0
        await client.aclose()
        return result

    for n in (1, 10):
        cpu, wall = asyncio.run(tasks(n))
        print(
            f"redis.asyncio, {n:2} task(s): {cpu * 1e6 / calls:5.0f} µs CPU per INCR, "
            f"{calls / wall:,.0f} calls/s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--mode", choices=("threads", "asyncio"), default="threads")
    parser.add_argument("-c", "--concurrency", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--async-jobs", action="store_true", help="async def jobs on threads")
    parser.add_argument("--noop", action="store_true", help="no-op jobs instead of one INCR")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--limit", type=int, default=0, help="concurrency_limit of the job")
    parser.add_argument(
        "--no-profiler", action="store_true", help="only the CPU per job and the round trips"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="only the job's own INCR, without a job system"
    )
    args = parser.parse_args(argv)
    if args.baseline:
        workdir = Path(tempfile.mkdtemp(prefix="conveyor-profile-"))
        children = Children(workdir)
        try:
            baseline(redis_url(start_redis(children, pick_redis_server(None), workdir)), args.jobs)
        finally:
            children.close()
        return
    run(args)


if __name__ == "__main__":
    main()
