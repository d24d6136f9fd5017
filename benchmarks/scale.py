"""Capacity plan figures: what one job costs Redis, and how throughput moves with stores and
worker processes.

    python -m benchmarks.scale [--jobs 40000] [--variant-jobs 20000] [--workers 1,2,4]

It starts two ``redis-server`` processes of its own (no RDB, no AOF) and, in one run:

1. **Redis CPU per job, by kind of job**: plain, deduplicated (``idempotent=True``: a cookie
   claimed at enqueue, released at start), concurrency-limited (``concurrency_limit=100``:
   slots kept by each process for its next jobs of the class) and tracked (the entities of a
   tracked bulk operation, 100 per batch job, with its counting script and failed items), on
   one store, drained by ``--variant-workers`` worker
   processes. Redis' own ``INFO cpu`` (``used_cpu_sys + used_cpu_user`` of the server) is read
   before the enqueue and after the last acknowledgement: enqueue, fetch, run and
   acknowledgement together. From it, the jobs/s one Redis core carries (1 s of CPU / CPU per
   job).
2. **Stores and worker processes**: plain jobs with 1 store, and with 2 stores (a routing rule
   sends half of them, class ``ScaleRouted``, to store ``b``), drained by N = ``--workers``
   worker processes per store (10 threads each): jobs/s, Redis CPU per job in each store, how
   busy each Redis was (CPU seconds over wall seconds), and the workers' CPU per job.

On a machine with few cores the workers, not Redis, set the jobs/s: Redis CPU per job is the
figure that carries over to a bigger machine. The report is printed and written to
``benchmarks/results/scale-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from benchmarks.core import terminate_on_sigterm
from benchmarks.harness import (
    ROOT,
    Children,
    cpu_model,
    cpu_seconds,
    pick_redis_server,
    redis_url,
    start_redis,
    wait_until,
)
from benchmarks.operation_jobs import OPERATION
from benchmarks.operation_jobs import create_app as create_operations_app
from benchmarks.scale_jobs import ROUTED, VARIANTS, create_app
from conveyor import Settings
from conveyor.features.flags import Flags

HERE = Path(__file__).resolve().parent
BATCH = 100  # entities per batch job of the tracked operation


@dataclass
class Run:
    """One measured drain: jobs per store, wall time, Redis and worker CPU."""

    label: str
    jobs: dict[str, int]
    seconds: float = 0.0
    redis_cpu: dict[str, float] = field(default_factory=dict)
    worker_cpu: float = 0.0
    #: Units the CPU is divided by when they are not jobs (entities of an operation).
    units: int = 0

    @property
    def total(self) -> int:
        return sum(self.jobs.values())

    def per_unit(self, store: str) -> float:
        """Redis CPU µs per job (or per unit) in ``store``."""
        count = self.units or self.jobs[store]
        return self.redis_cpu[store] * 1e6 / count if count else 0.0


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def processed(client: redis.Redis) -> int:
    return int(client.get("stat:processed") or 0)


class Bench:
    def __init__(self, children: Children, clients: dict[str, redis.Redis], timeout: float):
        self.children = children
        self.clients = clients
        self.urls = {name: redis_url(c) for name, c in clients.items()}
        self.timeout = timeout

    def env(self, stores: int, store: str = "default") -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env.update(
            CONVEYOR_REDIS_URL=self.urls["default"],
            CONVEYOR_CONCURRENCY="10",
            CONVEYOR_LOG_LEVEL="WARNING",
            CONVEYOR_STORE=store,
        )
        if stores == 2:
            env["CONVEYOR_STORES"] = json.dumps({"b": self.urls["b"]})
            env["CONVEYOR_ROUTING_RULES"] = json.dumps([[f"class={ROUTED}", None, "b"]])
        return env

    def settings(self, stores: int) -> Settings:
        env = self.env(stores)
        return Settings.load(env={k: v for k, v in env.items() if k.startswith("CONVEYOR_")})

    def measure(
        self,
        run: Run,
        module: str,
        workers: int,
        enqueue: Callable[[], object],
    ) -> Run:
        """Start ``workers`` processes per store of ``run.jobs``, wait until they are
        registered, then time the enqueue and the drain; Redis CPU read around both."""
        stores = list(run.jobs)
        for client in self.clients.values():
            client.flushall()
        procs = []
        for store in stores:
            env = self.env(len(self.clients) if len(stores) == 2 else 1, store)
            for i in range(workers):
                name = f"{module.rsplit('.', 1)[-1]}-{store}-{i}"
                procs.append(self.children.start(name, [sys.executable, "-m", module], env))
        try:
            for store in stores:
                client = self.clients[store]
                wait_until(
                    lambda c=client: c.scard("processes") >= workers,  # type: ignore[misc]
                    120,
                    f"{workers} worker(s) of store {store}",
                    proc=procs[0],
                )
            before = {s: server_cpu(self.clients[s]) for s in stores}
            workers_before = sum(cpu_seconds(p) for p in procs)
            started = time.perf_counter()
            enqueue()
            for store, count in run.jobs.items():
                client = self.clients[store]
                wait_until(
                    lambda c=client, n=count: processed(c) >= n,  # type: ignore[misc]
                    self.timeout,
                    f"{run.label}: {count} jobs in store {store}",
                    proc=procs[0],
                    poll=0.01,
                )
            run.seconds = time.perf_counter() - started
            run.redis_cpu = {s: server_cpu(self.clients[s]) - before[s] for s in stores}
            run.worker_cpu = sum(cpu_seconds(p) for p in procs) - workers_before
        finally:
            for proc in procs:
                self.children.stop(proc)
        return run

    # -- the runs -----------------------------------------------------------------------------
    def variant(self, variant: str, jobs: int, workers: int) -> Run:
        app = create_app(self.settings(1))
        job = app.registry[VARIANTS[variant][0]]
        rows = [[i] for i in range(jobs)]
        try:
            run = Run(variant, {"default": jobs})
            return self.measure(run, "benchmarks.scale_jobs", workers, lambda: _bulk(job, rows))
        finally:
            app.close()

    def tracked(self, entities: int, workers: int) -> Run:
        app, ops = create_operations_app(self.settings(1), BATCH)
        batches = -(-entities // BATCH)
        # The scheduler job, the batches and the completion job.
        run = Run("tracked (bulk operation, per entity)", {"default": 1 + batches + 1})
        run.units = entities

        def start() -> None:
            Flags(app, cache_ttl=0).enable(ops.settings.flag)
            ops.start(OPERATION, 1, {"n": entities, "fail_every": 100})

        try:
            return self.measure(run, "benchmarks.operation_jobs", workers, start)
        finally:
            app.close()

    def scale(self, stores: int, jobs: int, workers: int) -> Run:
        app = create_app(self.settings(stores))
        plain = app.registry["ScalePlain"]
        routed = app.registry[ROUTED]
        half = jobs // 2
        split = {"default": jobs} if stores == 1 else {"default": half, "b": jobs - half}

        def enqueue() -> None:
            _bulk(plain, [[i] for i in range(split["default"])])
            if stores == 2:
                _bulk(routed, [[i] for i in range(split["b"])])

        try:
            run = Run(f"{stores} store(s), {workers} worker(s) each", split)
            return self.measure(run, "benchmarks.scale_jobs", workers, enqueue)
        finally:
            app.close()


def _bulk(job: object, rows: list[list[int]]) -> None:
    job.bulk_perform_async(rows)  # type: ignore[attr-defined]


def report(variants: list[Run], scaled: list[tuple[int, int, Run]], argv: list[str]) -> str:
    lines = [
        f"# Capacity plan figures, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(['python -m benchmarks.scale', *argv])}`",
        "",
        f"Machine: {cpu_model()}, {psutil.cpu_count()} cores; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + f" at the end; Python {platform.python_version()}.",
        "",
        "## Redis CPU per job (one store)",
        "",
        "| kind | jobs | Redis CPU µs per job | jobs/s one Redis core carries | measured "
        "jobs/s here |",
        "|---|---:|---:|---:|---:|",
    ]
    for run in variants:
        per = run.per_unit("default")
        count = run.units or run.total
        lines.append(
            f"| {run.label} | {count:,} | {per:.1f} | {1e6 / per if per else 0:,.0f} | "
            f"{count / run.seconds:,.0f} |"
        )
    for run in variants:
        if run.units:
            per_job = run.redis_cpu["default"] * 1e6 / run.total
            lines += [
                "",
                f"Tracked: {run.units:,} entities in {run.total:,} jobs (a scheduler, batch jobs "
                f"of {BATCH} entities, a completion job): {per_job:.0f} µs of Redis CPU per job.",
            ]
    lines += [
        "",
        "## Stores and worker processes (plain jobs)",
        "",
        "| stores | worker processes per store | jobs | seconds | jobs/s | Redis CPU µs per "
        "job (per store) | Redis busy (CPU s / wall s, per store) | worker CPU µs per job |",
        "|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for stores, workers, run in scaled:
        per_store = " / ".join(f"{run.per_unit(s):.1f}" for s in run.jobs)
        busy = " / ".join(f"{run.redis_cpu[s] / run.seconds:.0%}" for s in run.jobs)
        lines.append(
            f"| {stores} | {workers} | {run.total:,} | {run.seconds:.2f} | "
            f"{run.total / run.seconds:,.0f} | {per_store} | {busy} | "
            f"{run.worker_cpu * 1e6 / run.total:.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=40_000, help="jobs per stores/workers run")
    parser.add_argument("--variant-jobs", type=int, default=20_000, help="jobs per kind of job")
    parser.add_argument("--workers", default="1,2,4", help="worker processes per store, e.g. 1,2,4")
    parser.add_argument("--variant-workers", type=int, default=2, help="workers per kind of job")
    parser.add_argument("--timeout", type=float, default=600.0, help="limit for each wait, s")
    parser.add_argument("--redis-server", help="redis-server binary (default: the newest found)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    try:
        args.worker_counts = [int(x) for x in args.workers.split(",") if x]
    except ValueError:
        parser.error(f"--workers must be whole numbers separated by commas, got {args.workers!r}")
    if min(args.worker_counts, default=0) < 1 or args.jobs < 2 or args.variant_jobs < 1:
        parser.error("--workers must be >= 1 each, --jobs >= 2, --variant-jobs >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-scale-"))
    children = Children(workdir)
    try:
        with terminate_on_sigterm():
            binary = pick_redis_server(args.redis_server)
            clients = {name: start_redis(children, binary, workdir) for name in ("default", "b")}
            bench = Bench(children, clients, args.timeout)
            variants = []
            for variant in VARIANTS:
                print(f"{variant} ...", file=sys.stderr, flush=True)
                variants.append(bench.variant(variant, args.variant_jobs, args.variant_workers))
            print("tracked ...", file=sys.stderr, flush=True)
            variants.append(bench.tracked(args.variant_jobs, args.variant_workers))
            scaled = []
            for stores in (1, 2):
                for workers in args.worker_counts:
                    print(
                        f"{stores} store(s), {workers} worker(s) ...", file=sys.stderr, flush=True
                    )
                    scaled.append((stores, workers, bench.scale(stores, args.jobs, workers)))
            for client in clients.values():
                client.close()
    except (RuntimeError, TimeoutError, subprocess.SubprocessError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for path in sorted(workdir.glob("*.log")):
            print(f"--- {path.name}\n{path.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        return 1
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(variants, scaled, argv)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"scale-{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    path.write_text(text)
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
