"""How close Conveyor runs to Redis' own limit, and what a worker costs in memory.

    python -m benchmarks.ceiling [--jobs 50000] [--idle 10]

On a fresh ``redis-server`` it starts itself (persistence off), in one run:

1. **Redis ceiling** with ``redis-benchmark`` for the commands one job's life needs at the
   least (``LPUSH`` to enqueue, ``LMOVE`` into a working list to fetch reliably, ``LREM`` to
   acknowledge), unpipelined and pipelined; the naive bound is then one job per three commands.
2. **Redis work per Conveyor job**: ``--jobs`` no-op jobs bulk-enqueued, then drained by one
   worker process (default settings, 10 threads). Around each phase it reads Redis' own
   ``INFO commandstats`` (microseconds spent executing commands) and ``INFO cpu`` (the server
   process' CPU time, which adds networking and parsing), so the per-job cost on the Redis side
   is known, and with it the jobs/s at which a single-threaded Redis would be saturated.
3. **Worker footprint**: the resident memory (RSS, and USS where the kernel reports it) of one
   Conveyor worker process after ``--idle`` seconds idle, and again idle after the drain; the
   same for Ruby Sidekiq 6.4 (``-c 10``) when installed.

The report is printed and written to ``benchmarks/results/ceiling-<date>.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
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

from benchmarks.conveyor_jobs import create_app
from benchmarks.core import sidekiq_version, terminate_on_sigterm
from benchmarks.harness import (
    ROOT,
    Children,
    cpu_model,
    pick_redis_server,
    redis_url,
    start_redis,
    wait_until,
)
from conveyor import Settings

HERE = Path(__file__).resolve().parent
# About the size of a no-op job's payload (a Sidekiq job with one integer argument).
PAYLOAD = "x" * 180
CSV = ["-c", "10", "--csv"]  # 10 connections, as many as a worker's threads


@dataclass
class Phase:
    jobs: int = 0
    seconds: float = 0.0
    command_usec: float = 0.0  # INFO commandstats, summed
    cpu_seconds: float = 0.0  # INFO cpu, user + sys of the server
    calls: int = 0
    top: list[tuple[str, int, float]] = field(default_factory=list)  # (command, calls, usec)
    #: Drain only: jobs/s between the first and the last job (the worker's boot excluded).
    steady_rate: float = 0.0


@dataclass
class Footprint:
    idle_rss: float = 0.0
    idle_uss: float = 0.0
    after_rss: float = 0.0
    threads: int = 0
    error: str = ""


def redis_benchmark(binary: str, port: int, requests: int) -> list[tuple[str, int, float]]:
    """(command, pipeline, requests/s) for the three commands of a job's life."""
    tool = shutil.which("redis-benchmark") or str(Path(binary).with_name("redis-benchmark"))
    if not Path(tool).exists() and not shutil.which(tool):
        raise FileNotFoundError("redis-benchmark not found (Debian: apt-get install redis-tools)")
    commands = {
        "LPUSH": ["LPUSH", "bench:q", PAYLOAD],
        "LMOVE": ["LMOVE", "bench:q", "bench:w", "RIGHT", "LEFT"],
        "LREM": ["LREM", "bench:w", "1", PAYLOAD],
    }
    rows = []
    for pipeline in (1, 16):
        for name, command in commands.items():
            out = subprocess.run(
                [tool, "-p", str(port), "-n", str(requests), "-P", str(pipeline), *CSV, *command],
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout
            for row in csv.reader(io.StringIO(out)):
                if row and row[0] != "test":
                    rows.append((name, pipeline, float(row[1])))
    return rows


def commandstats(client: redis.Redis) -> dict[str, tuple[int, float]]:
    info = client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"]))
        for name, v in info.items()
    }


def server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measured(client: redis.Redis, run: Callable[[], object], jobs: int) -> Phase:
    """Run ``run()`` and return what Redis spent on it."""
    client.config_resetstat()
    cpu = server_cpu(client)
    started = time.perf_counter()
    run()
    phase = Phase(jobs=jobs, seconds=time.perf_counter() - started)
    phase.cpu_seconds = server_cpu(client) - cpu
    stats = commandstats(client)
    stats.pop("config|resetstat", None)
    stats.pop("info", None)
    phase.command_usec = sum(usec for _, usec in stats.values())
    phase.calls = sum(calls for calls, _ in stats.values())
    phase.top = sorted(((n, c, u) for n, (c, u) in stats.items()), key=lambda t: -t[2])[:6]
    return phase


def footprint(proc: subprocess.Popen[bytes], idle: float) -> Footprint:
    time.sleep(idle)
    process = psutil.Process(proc.pid)
    info = process.memory_full_info()
    return Footprint(
        idle_rss=info.rss / 2**20,
        idle_uss=getattr(info, "uss", 0) / 2**20,
        threads=process.num_threads(),
    )


def conveyor_phases(
    children: Children, client: redis.Redis, args: argparse.Namespace
) -> tuple[Phase, Phase, Footprint]:
    url = redis_url(client)
    app = create_app(Settings(redis_url=url))
    client.flushall()
    env = dict(os.environ, CONVEYOR_REDIS_URL=url, PYTHONPATH=str(ROOT))
    worker = [sys.executable, "-m", "benchmarks.conveyor_jobs"]
    proc = children.start("conveyor-worker", worker, env)
    try:
        wait_until(lambda: any(client.scan_iter("conveyor:alive:*")), 60, "worker boot", proc=proc)
        foot = footprint(proc, args.idle)
        # Quiet the worker so the enqueue phase measures the enqueue alone.
        children.stop(proc)
        job = app.registry["BenchSilent"]
        rows = [[i] for i in range(args.jobs - 1)] + [[-1]]
        enqueue = measured(client, lambda: job.bulk_perform_async(rows), args.jobs)
        proc = children.start("conveyor-worker", worker, env)

        def drained() -> None:
            wait_until(
                lambda: int(client.get("stat:processed") or 0) >= args.jobs,
                args.timeout,
                "drain",
                proc=proc,
                poll=0.01,
            )

        drain = measured(client, drained, args.jobs)
        first = float(client.get("bench:silent:first") or 0)
        last = float(client.get("bench:silent:last") or 0)
        drain.steady_rate = (args.jobs - 1) / (last - first) if 0 < first < last else 0.0
        time.sleep(1.0)
        foot.after_rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        children.stop(proc)
        app.close()
    return enqueue, drain, foot


def sidekiq_footprint(children: Children, client: redis.Redis, idle: float) -> Footprint:
    if not sidekiq_version():
        return Footprint(error="Ruby Sidekiq is not installed")
    env = dict(os.environ, REDIS_URL=redis_url(client))
    cmd = ["ruby", str(HERE / "sidekiq" / "server.rb"), "-c", "10"]
    proc = children.start("sidekiq", cmd, env)
    try:
        wait_until(lambda: client.scard("processes") > 0, 60, "sidekiq boot", proc=proc)
        return footprint(proc, idle)
    finally:
        children.stop(proc)


def report(
    bench: list[tuple[str, int, float]],
    phases: tuple[Phase, Phase, Footprint],
    sidekiq: Footprint,
    machine: list[str],
    argv: list[str],
) -> str:
    enqueue, drain, foot = phases
    lines = [
        f"# Redis ceiling and worker footprint, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `python -m benchmarks.ceiling {' '.join(argv)}`".replace(" `", "`"),
        "",
        *machine,
        "",
        "## Redis alone (`redis-benchmark`, 10 connections)",
        "",
        "| command | pipeline | requests/s |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {p} | {rps:,.0f} |" for name, p, rps in bench]
    unpiped = [rps for _, p, rps in bench if p == 1]
    if unpiped:
        bound = 1 / sum(1 / r for r in unpiped)
        lines += [
            "",
            f"One job per `LPUSH` + `LMOVE` + `LREM`, unpipelined: at most "
            f"**{bound:,.0f} jobs/s**.",
        ]
    lines += ["", "## Redis work per Conveyor job", ""]
    lines += [
        "| phase | jobs/s measured | Redis commands per job | command µs per job | Redis CPU µs "
        "per job | jobs/s at which Redis' CPU would be saturated |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, phase in (("bulk enqueue", enqueue), ("fetch + run + acknowledge", drain)):
        per_cpu = phase.cpu_seconds * 1e6 / phase.jobs
        rate = phase.steady_rate or phase.jobs / phase.seconds
        lines.append(
            f"| {name} | {rate:,.0f} | {phase.calls / phase.jobs:.3f} | "
            f"{phase.command_usec / phase.jobs:.2f} | {per_cpu:.2f} | "
            f"{1e6 / per_cpu if per_cpu else float('inf'):,.0f} |"
        )
    both = (enqueue.cpu_seconds + drain.cpu_seconds) * 1e6 / enqueue.jobs
    lines += [
        "",
        f"Enqueue and drain together use {both:.2f} µs of Redis CPU per job: one Redis core "
        f"could carry about **{1e6 / both:,.0f} jobs/s** end to end, against "
        f"{drain.steady_rate:,.0f}/s drained by one worker process here "
        f"({drain.steady_rate / (1e6 / both):.0%} of it; the drain rate is timed from the "
        "first job to the last, the Redis CPU over the whole phase including the boot).",
        "",
        "Costliest commands (drain): "
        + ", ".join(f"`{n}` {c:,} calls {u / 1000:,.0f} ms" for n, c, u in drain.top),
        "",
        "## Worker footprint",
        "",
        "| worker | threads | idle RSS MiB | idle USS MiB | RSS after the drain, MiB |",
        "|---|---:|---:|---:|---:|",
        f"| Conveyor (1 process, 10 threads) | {foot.threads} | {foot.idle_rss:.1f} | "
        f"{foot.idle_uss:.1f} | {foot.after_rss:.1f} |",
    ]
    if sidekiq.error:
        lines.append(f"| Sidekiq | n/a: {sidekiq.error} | | | |")
    else:
        lines.append(
            f"| Ruby Sidekiq 6.4 (`-c 10`) | {sidekiq.threads} | {sidekiq.idle_rss:.1f} | "
            f"{sidekiq.idle_uss:.1f} | |"
        )
    return "\n".join(lines) + "\n"


def describe(client: redis.Redis, binary: str) -> list[str]:
    info = client.info("server")
    return [
        f"Machine: {cpu_model()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB; load average "
        f"{os.getloadavg()[0]:.2f} at the start; Python {platform.python_version()}; "
        f"redis-server {info['redis_version']} ({binary}).",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ceiling", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=50_000, help="jobs enqueued and drained")
    parser.add_argument("--requests", type=int, default=200_000, help="per redis-benchmark run")
    parser.add_argument("--idle", type=float, default=10.0, help="idle seconds before RSS")
    parser.add_argument("--timeout", type=float, default=300.0, help="limit for each wait, s")
    parser.add_argument("--redis-server", help="redis-server binary (default: the newest found)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-ceiling-"))
    children = Children(workdir)
    try:
        with terminate_on_sigterm():
            binary = pick_redis_server(args.redis_server)
            client = start_redis(children, binary, workdir)
            machine = describe(client, binary)
            port = int(client.connection_pool.connection_kwargs["port"])
            print("redis-benchmark ...", file=sys.stderr, flush=True)
            bench = redis_benchmark(binary, port, args.requests)
            client.flushall()
            print("Conveyor ...", file=sys.stderr, flush=True)
            phases = conveyor_phases(children, client, args)
            print("Sidekiq footprint ...", file=sys.stderr, flush=True)
            sidekiq = sidekiq_footprint(children, client, args.idle)
            client.close()
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(bench, phases, sidekiq, machine, argv)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"ceiling-{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    path.write_text(text)
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
