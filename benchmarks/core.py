"""Core engine benchmark: Conveyor against Ruby Sidekiq 6.4, in one run, on one local Redis.

    python -m benchmarks.core [--jobs 30000] [--rate 1000] [--duration 5]

For each engine (Sidekiq only when Ruby and the gem are installed) it measures, on a fresh
``redis-server`` it starts itself (persistence off):

1. bulk enqueue: ``--jobs`` no-op jobs pushed 1000 per call (``bulk_perform_async`` /
   ``Sidekiq::Client.push_bulk``), timed inside the pushing process;
2. drain: one worker process (10 threads) started on those pre-filled jobs; timed from the
   process start until every job has run. Completions are counted by the job's own ``INCR
   bench:done``, the same in both engines, not by either engine's counters;
3. latency: with that worker idle, one producer (the same Python client for both engines)
   pushes ``--rate`` jobs/s for ``--duration`` s; each job records ``now - sent`` and the harness
   reports p50/p99.

It prints a table with the ratio Conveyor/Sidekiq and writes it, with the machine and versions,
to ``benchmarks/results/core-<date>.md``. Every process it starts is stopped on exit, even on
error or Ctrl-C. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import psutil
import redis

import conveyor
from benchmarks import io_workload
from benchmarks.conveyor_jobs import create_app
from benchmarks.harness import (
    ROOT,
    Children,
    command_output,
    cpu_model,
    cpu_seconds,
    pick_redis_server,
    redis_url,
    sidekiq_version,
    start_redis,
    terminate_on_sigterm,
    wait_until,
)
from benchmarks.peers import Runner
from conveyor import Settings

HERE = Path(__file__).resolve().parent
SIDEKIQ_DIR = HERE / "sidekiq"
BATCH = 1000
CONCURRENCY = 10


# -- engines --------------------------------------------------------------------------------------
@dataclass
class Result:
    bulk_rate: float = 0.0
    drain_rate: float = 0.0
    steady_rate: float = 0.0
    first_job_s: float = 0.0
    cpu_ms_per_1k: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    busy_p50_ms: float = 0.0
    busy_p99_ms: float = 0.0
    achieved_rate: float = 0.0
    silent_rate: float = 0.0
    latency_jobs: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


class Engine:
    name = ""
    log_name = ""
    #: The wire names of the no-op (one INCR), silent no-op and latency jobs.
    jobs: ClassVar[dict[str, str]] = {
        "noop": "BenchNoop",
        "silent": "BenchSilent",
        "latency": "BenchLatency",
    }

    def __init__(self, children: Children, url: str) -> None:
        self.children = children
        self.url = url

    def bulk(self, jobs: int, job_class: str = "BenchNoop") -> float:
        """Push ``jobs`` jobs of ``job_class`` in batches of 1000; seconds taken. BenchSilent
        runs end with the marker job (index -1)."""
        raise NotImplementedError

    def start_worker(self) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def acknowledged(self, client: redis.Redis, jobs: int) -> bool:
        """Whether the engine has acknowledged ``jobs`` finished jobs."""
        raise NotImplementedError


class ConveyorEngine(Engine):
    name = "Conveyor"
    log_name = "conveyor-worker"
    mode = "auto"  # the default: threads, as the app registers plain job classes
    extra_env: ClassVar[dict[str, str]] = {}

    def bulk(self, jobs: int, job_class: str = "BenchNoop") -> float:
        app = create_app(Settings(redis_url=self.url))
        try:
            app.store.client.ping()
            args = [[i] for i in range(jobs)]
            if job_class.startswith("BenchSilent"):
                args[-1] = [-1]
            job = app.registry[job_class]
            started = time.perf_counter()
            job.bulk_perform_async(args, batch_size=BATCH)
            return time.perf_counter() - started
        finally:
            app.close()

    def start_worker(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        env["CONVEYOR_REDIS_URL"] = self.url
        env["CONVEYOR_CONCURRENCY"] = str(CONCURRENCY)
        env["CONVEYOR_WORKER_MODE"] = self.mode
        env.update(self.extra_env)
        return self.children.start(
            self.log_name, [sys.executable, "-m", "benchmarks.conveyor_jobs"], env
        )

    def acknowledged(self, client: redis.Redis, jobs: int) -> bool:
        # A job leaves the working list and counts in stat:processed in one script.
        return int(client.get("stat:processed") or 0) >= jobs


class ConveyorAsyncioEngine(ConveyorEngine):
    """The ``async def`` twins of the jobs (redis.asyncio) in an app of only those, under the
    default settings: ``worker_mode=auto`` runs them in asyncio mode."""

    name = "Conveyor asyncio"
    log_name = "conveyor-asyncio-worker"
    mode = "auto"
    jobs: ClassVar[dict[str, str]] = {k: f"{v}Async" for k, v in Engine.jobs.items()}
    extra_env: ClassVar[dict[str, str]] = {"BENCH_ONLY_ASYNC": "1"}


class SidekiqEngine(Engine):
    name = "Sidekiq"
    log_name = "sidekiq"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "REDIS_URL": self.url}

    def bulk(self, jobs: int, job_class: str = "BenchNoop") -> float:
        done = subprocess.run(
            ["ruby", str(SIDEKIQ_DIR / "bulk.rb"), str(jobs), str(BATCH), job_class],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"ruby bulk.rb failed:\n{done.stderr[-2000:]}")
        return float(json.loads(done.stdout)["seconds"])

    def start_worker(self) -> subprocess.Popen[bytes]:
        cmd = ["ruby", str(SIDEKIQ_DIR / "server.rb"), "-c", str(CONCURRENCY), "-q", "default"]
        cmd += ["-t", "5"]
        return self.children.start(self.log_name, cmd, self._env())

    def acknowledged(self, client: redis.Redis, jobs: int) -> bool:
        # Sidekiq's BRPOP fetch removes a job from Redis when it starts: nothing to acknowledge.
        return True


def measure(engine: Engine, client: redis.Redis, args: argparse.Namespace) -> Result:
    result = Result()
    client.flushall()

    # 1. Bulk enqueue, which is also the pre-fill of the drain.
    seconds = engine.bulk(args.jobs, engine.jobs["noop"])
    queued = client.llen("queue:default")
    if queued != args.jobs:
        raise RuntimeError(f"{engine.name}: {queued} jobs queued after pushing {args.jobs}")
    result.bulk_rate = args.jobs / seconds

    # 2. Drain by one worker process, counted by the jobs' own INCR.
    def done() -> int:
        return int(client.get("bench:done") or 0)

    started = time.perf_counter()
    proc = engine.start_worker()
    try:
        first = wait_until(lambda: done() > 0, args.timeout, "the first job", proc=proc)
        done_at_first, cpu_at_first = done(), cpu_seconds(proc)
        wait_until(lambda: done() >= args.jobs, args.timeout, "the drain", proc=proc)
        last = wait_until(
            lambda: engine.acknowledged(client, args.jobs), args.timeout, "the acks", proc=proc
        )
        cpu_at_last = cpu_seconds(proc)
        if client.llen("queue:default"):
            raise RuntimeError(f"{engine.name}: jobs left on the queue after the drain")
        result.first_job_s = first - started
        result.drain_rate = args.jobs / (last - started)
        if last > first and args.jobs > done_at_first:
            result.steady_rate = (args.jobs - done_at_first) / (last - first)
            result.cpu_ms_per_1k = (cpu_at_last - cpu_at_first) * 1e6 / (args.jobs - done_at_first)

        # 3. Latency at a fixed rate, the worker idle and warm; then again beside two
        # processes burning CPU (the machine busy with other work).
        time.sleep(0.5)
        result.p50_ms, result.p99_ms, result.max_ms = latency(engine, client, args, result, proc)
        burners = [
            engine.children.start(
                f"burner-{i}", [sys.executable, "-c", "while True: pass"], dict(os.environ)
            )
            for i in range(2)
        ]
        try:
            client.delete("bench:latency")
            time.sleep(0.5)
            result.busy_p50_ms, result.busy_p99_ms, _ = latency(engine, client, args, result, proc)
        finally:
            for burner in burners:
                engine.children.stop(burner)
    finally:
        engine.children.stop(proc)

    # 4. Drain of true no-op jobs, timed by the jobs themselves (first and final marker).
    silent(engine, client, args, result)
    return result


def silent(engine: Engine, client: redis.Redis, args: argparse.Namespace, result: Result) -> None:
    client.flushall()
    engine.bulk(args.jobs, engine.jobs["silent"])
    proc = engine.start_worker()
    try:
        wait_until(
            lambda: client.exists("bench:silent:last") == 1,
            args.timeout,
            "the no-op drain",
            proc=proc,
            poll=0.05,
        )
        first = float(client.get("bench:silent:first") or 0)
        last = float(client.get("bench:silent:last") or 0)
        if last > first:
            result.silent_rate = (args.jobs - 1) / (last - first)
    finally:
        engine.children.stop(proc)


def latency(
    engine: Engine,
    client: redis.Redis,
    args: argparse.Namespace,
    result: Result,
    proc: subprocess.Popen[bytes],
) -> tuple[float, float, float]:
    """p50, p99 and max (ms) from enqueue to start at ``--rate`` jobs/s."""
    app = create_app(Settings(redis_url=engine.url))
    job = app.registry[engine.jobs["latency"]]
    count = max(1, int(args.rate * args.duration))
    interval = 1.0 / args.rate
    try:
        app.store.client.ping()
        started = time.perf_counter()
        for i in range(count):
            delay = started + i * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            job.perform_async(time.time())
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    wait_until(
        lambda: client.llen("bench:latency") >= count,
        args.timeout,
        "the latency jobs",
        proc=proc,
        poll=0.05,
    )
    samples = sorted(float(x) * 1000 for x in client.lrange("bench:latency", 0, -1))
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    result.latency_jobs = count
    result.achieved_rate = count / elapsed if elapsed > 0 else 0.0
    return cuts[49], cuts[98], samples[-1]


# -- environment and report -----------------------------------------------------------------------
def describe_machine(client: redis.Redis, redis_binary: str, sidekiq: str) -> list[str]:
    info = client.info("server")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    ruby = command_output(["ruby", "-v"]) if sidekiq else "not used"
    return [
        f"- host: {socket.gethostname()}; CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; "
        f"load average at start: {load}",
        f"- Python {platform.python_version()}, conveyor {conveyor.__version__}",
        f"- Ruby: {ruby}; Sidekiq {sidekiq or 'not installed'}",
        f"- Redis {info['redis_version']} ({redis_binary}), started by the harness, "
        "persistence off",
    ]


ROWS: list[tuple[str, str, str, bool]] = [
    # (label, Result attribute, format, higher is better)
    ("drain (INCR on the engine's pool): jobs/s, worker start to last", "drain_rate", ",.0f", True),
    ("drain (INCR on the engine's pool): jobs/s, steady state", "steady_rate", ",.0f", True),
    ("drain: no-op jobs/s, no side effect (first to final marker)", "silent_rate", ",.0f", True),
    ("drain: seconds from worker start to first job", "first_job_s", ".2f", False),
    ("drain (INCR on the engine's pool): worker CPU ms/1000 jobs", "cpu_ms_per_1k", ",.0f", False),
    ("bulk enqueue: jobs/s (batches of 1000)", "bulk_rate", ",.0f", True),
    ("latency p50, ms (enqueue to start), quiet", "p50_ms", ".2f", False),
    ("latency p99, ms, quiet", "p99_ms", ".2f", False),
    ("latency max, ms, quiet", "max_ms", ".2f", False),
    ("latency p50, ms, beside two CPU-burning processes", "busy_p50_ms", ".2f", False),
    ("latency p99, ms, beside two CPU-burning processes", "busy_p99_ms", ".2f", False),
]  # fmt: skip


def table(results: dict[str, Result], args: argparse.Namespace) -> list[str]:
    """The no-op table: a column per engine, then each Conveyor column over Sidekiq's."""
    names = list(results)
    ours = [n for n in names if n != "Sidekiq"]
    sidekiq_r = results.get("Sidekiq")
    lines = [
        "| metric | better | " + " | ".join(names) + " | "
        + " | ".join(f"{n} ÷ Sidekiq" for n in ours) + " |",
        "|---|:-:|" + "---:|" * (len(names) + len(ours)),
    ]  # fmt: skip
    for label, attr, fmt, higher in ROWS:
        cells = [_cell(results[n], attr, fmt) for n in names]
        for n in ours:
            r = results[n]
            theirs = getattr(sidekiq_r, attr) if sidekiq_r and not sidekiq_r.error else 0
            ok = theirs and not r.error
            cells.append(f"{getattr(r, attr) / theirs:.2f}" if ok else "n/a")
        better = "higher" if higher else "lower"
        lines.append(f"| {label} | {better} | {' | '.join(cells)} |")
    rates = ", ".join(
        f"{name} {r.latency_jobs} jobs at {r.achieved_rate:,.0f}/s"
        for name, r in results.items()
        if not r.error
    )
    lines += ["", f"Latency producer (target {args.rate:,}/s for {args.duration:g} s): {rates}."]
    return lines


def _cell(r: Result, attr: str, fmt: str) -> str:
    return "n/a" if r.error else format(getattr(r, attr), fmt)


NOTES = """\
How it was measured:

- One `redis-server` for the whole run; `FLUSHALL` before each engine.
- Bulk enqueue: `--jobs` jobs, 1000 per call (`BenchNoop.bulk_perform_async` /
  `Sidekiq::Client.push_bulk`), timed inside the pushing process after it connected.
- Drain: the bulk-enqueued jobs, one worker process with 10 threads started on them
  (`python -m benchmarks.conveyor_jobs` / `sidekiq -c 10` via benchmarks/sidekiq/server.rb).
  Completions are counted by the job's own `INCR bench:done` (identical in both engines) on
  the engine's connection (`Sidekiq.redis { |conn| ... }`, a checkout from Sidekiq's pool;
  `app.redis()`, the worker thread's own connection from Conveyor's pool), never
  by `stat:processed`; for Conveyor the drain also waits until `stat:processed` shows every
  job acknowledged (it moves with the ack, in one script). "Worker start" is the moment the
  harness spawns the process, so the first figure includes interpreter boot; the steady-state
  figure and the CPU per 1000 jobs start at the first completed job.
- No-op drain: `--jobs` `BenchSilent` jobs that do nothing, except that the first and the
  last (a marker pushed last) record the wall-clock time they ran; the rate is the jobs between
  them over that interval, measured by the jobs themselves (a fresh worker process each).
- Latency: the worker stays up, idle; one Python producer (the same Conveyor client for both
  engines, since both read Sidekiq's wire format) pushes `BenchLatency` one job at a time at the
  target rate; each job RPUSHes `now - sent`. Percentiles over all jobs.
- Latency beside two CPU-burning processes: the same, while two `python -c "while True:
  pass"` processes (one per core on a 2-core machine) compete for the CPU.
- Conveyor asyncio: the `async def` twins of the jobs (`BenchNoopAsync`, ... on
  redis.asyncio) in an app of only those, under the default `worker_mode=auto`, which runs them
  in asyncio mode; 10 slots.
- Sidekiq's per-job INFO log lines are switched off (log level WARN) because Conveyor logs
  nothing per job.
"""


def report(
    results: dict[str, Result],
    io: list[io_workload.IoResult],
    machine: list[str],
    args: argparse.Namespace,
    argv: list[str],
) -> str:
    now = dt.datetime.now(dt.UTC)
    lines = [
        f"# Conveyor core benchmark, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{shlex.join(['python', '-m', 'benchmarks.core', *argv])}`",
        "",
        *machine,
        *([f"- note: {args.note}"] if args.note else []),
        "",
        *table(results, args),
        "",
    ]
    for name, r in results.items():
        if r.error and r.error.startswith("not measured"):
            lines.append(f"{name}: {r.error}.")
        elif r.error:
            lines.append(f"**{name} failed:** {r.error}")
        lines += [f"- {name}: {note}" for note in r.notes]
    if io:
        lines += [
            "",
            f"## The I/O workload: {args.io_jobs:,} jobs, each one INCR on its own connection",
            "",
            *io_workload.table(io),
            "",
            io_workload.NOTES,
        ]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines += [
        f"Load average at the end: {load}.",
        "",
        "Absolute figures depend on the machine and on what else runs on it (see the load "
        "average above); compare the ratios, measured in the same run on the same Redis.",
        "",
        NOTES,
    ]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.core", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=30_000, help="jobs to bulk-enqueue and drain")
    parser.add_argument("--rate", type=int, default=1_000, help="latency producer, jobs/s")
    parser.add_argument("--duration", type=float, default=5.0, help="latency phase, seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="limit for each wait, s")
    parser.add_argument("--redis-server", help="redis-server binary (default: the newest found)")
    parser.add_argument("--no-sidekiq", action="store_true", help="measure Conveyor only")
    parser.add_argument("--io-jobs", type=int, default=20_000, help="jobs per I/O drain")
    parser.add_argument(
        "--io-engine",
        action="append",
        choices=io_workload.ENGINES,
        help="measure the I/O workload only for this engine (repeatable; default: all)",
    )
    parser.add_argument("--io-rounds", type=int, default=1, help="runs of each I/O variant")
    parser.add_argument("--no-io", action="store_true", help="skip the I/O workload")
    parser.add_argument("--note", default="", help="a line for the report, e.g. other load")
    parser.add_argument(
        "--results-dir", type=Path, default=HERE / "results", help="where core-<date>.md goes"
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.rate, args.io_rounds) < 1 or args.io_jobs < 10:
        parser.error("--jobs, --rate and --io-rounds must be >= 1 and --io-jobs >= 10")
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    return args


def run(args: argparse.Namespace, argv: list[str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    children = Children(workdir)
    results: dict[str, Result] = {}
    io: list[io_workload.IoResult] = []
    machine: list[str] = []
    try:
        with terminate_on_sigterm():
            binary = pick_redis_server(args.redis_server)
            client = start_redis(children, binary, workdir)
            url = redis_url(client)
            sidekiq = "" if args.no_sidekiq else sidekiq_version()
            machine = describe_machine(client, binary, sidekiq)
            engines: list[Engine] = [
                ConveyorEngine(children, url),
                ConveyorAsyncioEngine(children, url),
            ]
            if sidekiq:
                engines.append(SidekiqEngine(children, url))
            for engine in engines:
                print(f"measuring {engine.name} ...", file=sys.stderr, flush=True)
                try:
                    results[engine.name] = measure(engine, client, args)
                except (RuntimeError, TimeoutError, redis.RedisError, OSError, psutil.Error) as exc:
                    log = engine.children.log_tail(engine.log_name)
                    results[engine.name] = Result(error=f"{type(exc).__name__}: {exc}")
                    print(f"{engine.name} failed: {exc}\n{log}", file=sys.stderr)
            if not sidekiq:
                why = "--no-sidekiq" if args.no_sidekiq else "Ruby Sidekiq is not installed"
                results["Sidekiq"] = Result(error=f"not measured ({why})")
            if not args.no_io:
                print("measuring the I/O workload ...", file=sys.stderr, flush=True)
                chosen = tuple(args.io_engine or io_workload.ENGINES)
                runner = Runner(children, client, args)
                io = io_workload.run_all(runner, args.io_jobs, chosen, args.io_rounds)
            client.close()
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)

    text = report(results, io, machine, args, argv)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"core-{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    path.write_text(text)
    print(f"written to {path}", file=sys.stderr)
    failed = [n for n, r in results.items() if r.error and not r.error.startswith("not measured")]
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
