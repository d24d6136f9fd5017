"""Conveyor against the Python peers, in one run, on one local Redis, one worker process each.

    python -m benchmarks.peers [--jobs 5000] [--sleep-jobs 2000] [--only NAME]

Peers: Ruby Sidekiq 6.4 (Debian's ``ruby-sidekiq``, when installed; ``benchmarks/peers/
sidekiq_main.rb``), RQ (Worker and SimpleWorker), Dramatiq, Celery (prefork and threads), arq, Huey,
taskiq-redis and SAQ, each with its documented default settings (see ``PEERS``), installed
with ``pip install -r benchmarks/requirements-peers.txt``. For each, on a fresh
``redis-server`` it starts itself (persistence off), it measures:

1. no-op drain: ``--jobs`` no-op jobs pre-filled, then one worker process started on them; the
   first job and a final marker job record the wall-clock time they ran, and the rate is the
   jobs between over that interval (as benchmarks/core.py's no-op drain);
2. bulk enqueue: the pre-fill of 1., timed inside the pushing process, with the library's batch
   API where it has one, else a loop of single enqueues;
3. I/O-bound drain: ``--sleep-jobs`` jobs sleeping 10 ms, at concurrency 10, timed by the jobs
   from the first to the last completion;
4. latency: with the worker up and idle, one producer pushes one job at a time at ``--rate``
   for ``--duration``; each job records ``now - sent``; p50 and p99.

A peer that is not installed or fails is reported as n/a with the reason. The table (ratio
Conveyor/peer) is printed and written to ``benchmarks/results/peers-<date>.md``. Job modules:
``benchmarks/peers/<name>_jobs.py``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from benchmarks.harness import (
    ROOT,
    Children,
    cpu_model,
    pick_redis_server,
    redis_url,
    sidekiq_version,
    start_redis,
    terminate_on_sigterm,
    tree_cpu,
    wait_until,
)

HERE = Path(__file__).resolve().parent
JOBS_DIR = HERE / "peers"
CONCURRENCY = 10
KINDS = ("noop", "sleep")
#: The share of the I/O jobs run before the measurement starts (boot, connections, caches).
WARM_UP = 0.1

Command = list[tuple[list[str], dict[str, str]]]  # (argv, extra environment) per process


def script(name: str) -> str:
    """A console script of the current environment (next to the interpreter), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def python_entry(module: str) -> Callable[[str, str], list[str]]:
    return lambda kind, url: [sys.executable, "-m", "peer_common", "worker", module]


@dataclass(frozen=True)
class Peer:
    key: str  # for --only
    label: str
    module: str  # benchmarks/peers/<module>_jobs.py
    dists: tuple[str, ...]  # for the versions line
    settings: str
    bulk_api: str
    worker: Callable[[str, str], list[str]]  # (kind, redis url) -> command
    sleep_na: str = ""  # why the 10 ms workload cannot run at concurrency 10
    max_jobs: int = 0  # a cap on --jobs for a very slow peer (0: none)
    #: (kind, jobs) -> the enqueue command, for a peer not written in Python.
    enqueuer: Callable[[str, int], list[str]] | None = None
    #: Why the peer cannot run on this machine ("" when it can).
    missing: Callable[[], str] = lambda: ""


def _rq(worker_class: str) -> Callable[[str, str], list[str]]:
    return lambda kind, url: [script("rq"), "worker", "-u", url, "-q", "-w", worker_class, "bench"]


def _celery(pool: str) -> Callable[[str, str], list[str]]:
    cmd = ["worker", "-P", pool, "-c", str(CONCURRENCY), "-l", "WARNING"]
    return lambda kind, url: [script("celery"), "-A", "celery_jobs", *cmd]


def _sidekiq_missing() -> str:
    if sidekiq_version():
        return ""
    return "Ruby Sidekiq is not installed (Debian: apt-get install ruby-sidekiq)"


SIDEKIQ_MAIN = str(JOBS_DIR / "sidekiq_main.rb")
HUEY_ARGS = ["-k", "thread", "-w", str(CONCURRENCY), "-q"]
RQ_ONE = "RQ runs one job at a time per worker process (no threads): concurrency 10 is 10 processes"
PEERS: list[Peer] = [
    Peer(
        "conveyor", "Conveyor", "conveyor", ("conveyor",), "default (10 threads)",
        "`bulk_perform_async`, 1000 per call", python_entry("conveyor"),
    ),
    Peer(
        "sidekiq", "Ruby Sidekiq", "sidekiq", (), "`sidekiq -c 10` (Sidekiq::CLI)",
        "`Sidekiq::Client.push_bulk`, 1000 per call",
        lambda kind, url: ["ruby", SIDEKIQ_MAIN, "worker"],
        enqueuer=lambda kind, jobs: ["ruby", SIDEKIQ_MAIN, "enqueue", kind, str(jobs)],
        missing=_sidekiq_missing,
    ),
    Peer(
        "rq-worker", "RQ Worker", "rq", ("rq",),
        "`rq worker -q` (forks a child per job; at most 1,000 no-op jobs)",
        "`Queue.enqueue_many`, 1000 per pipeline", _rq("rq.worker.Worker"), RQ_ONE, 1_000,
    ),
    Peer(
        "rq-simple", "RQ SimpleWorker", "rq", ("rq",), "`rq worker -q -w SimpleWorker`",
        "`Queue.enqueue_many`, 1000 per pipeline", _rq("rq.worker.SimpleWorker"), RQ_ONE,
    ),
    Peer(
        "dramatiq", "Dramatiq", "dramatiq", ("dramatiq",),
        "`dramatiq -p 1` (a parent and 1 worker process of 8 threads; 10 ms jobs: `-t 10`)",
        "loop of `send`",
        lambda kind, url: [script("dramatiq"), "dramatiq_jobs", "-p", "1"]
        + (["-t", str(CONCURRENCY)] if kind == "sleep" else []),
    ),
    Peer(
        "celery-prefork", "Celery prefork", "celery", ("celery", "kombu"),
        "`celery worker -P prefork -c 10 -l WARNING` (a parent and 10 children)",
        "loop of `delay`", _celery("prefork"),
    ),
    Peer(
        "celery-threads", "Celery threads", "celery", ("celery", "kombu"),
        "`celery worker -P threads -c 10 -l WARNING`", "loop of `delay`", _celery("threads"),
    ),
    Peer(
        "arq", "arq", "arq", ("arq",),
        "`run_worker`, defaults (`max_jobs` 10, `poll_delay` 0.5 s), log WARNING",
        "loop of `enqueue_job`", python_entry("arq"),
    ),
    Peer(
        "huey", "Huey", "huey", ("huey",), "`huey_consumer -k thread -w 10 -q` (RedisHuey)",
        "loop of task calls",
        lambda kind, url: [script("huey_consumer"), "huey_jobs.huey", *HUEY_ARGS],
    ),
    Peer(
        "taskiq", "taskiq-redis", "taskiq", ("taskiq", "taskiq-redis"),
        "`taskiq worker --workers 1` (a parent and 1 worker; RedisStreamBroker; 10 ms jobs: "
        "`--max-async-tasks 10`)",
        "loop of `kiq`",
        lambda kind, url: [script("taskiq"), "worker", "taskiq_jobs:broker", "--workers", "1"]
        + ["--log-level", "WARNING"]
        + (["--max-async-tasks", str(CONCURRENCY)] if kind == "sleep" else []),
    ),
    Peer(
        "saq", "SAQ", "saq", ("saq",), "`saq --workers 1` (concurrency 10)", "loop of `enqueue`",
        lambda kind, url: [script("saq"), "saq_jobs.settings", "--workers", "1"],
    ),
]  # fmt: skip


# -- measuring ------------------------------------------------------------------------------------
@dataclass
class Result:
    noop_rate: float = 0.0
    bulk_rate: float = 0.0
    sleep_rate: float = 0.0
    io_rate: float = 0.0
    io_cpu_us: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)  # metric -> why it is n/a


class Runner:
    def __init__(self, children: Children, client: redis.Redis, args: argparse.Namespace) -> None:
        self.children = children
        self.client = client
        self.args = args
        self.url = redis_url(client)
        self.env = dict(os.environ)
        path = [str(JOBS_DIR), str(ROOT), self.env.get("PYTHONPATH", "")]
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in path if p)
        self.env["BENCH_REDIS_URL"] = self.env["CONVEYOR_REDIS_URL"] = self.url
        self.env["BENCH_RATE"] = str(args.rate)

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        # The measurement is over: no need to wait for a slow graceful shutdown (taskiq: 20 s).
        self.children.stop(proc, timeout=5)
        # Forking workers (Celery prefork, RQ Worker) leave no child behind: each process runs
        # in its own session, so its group is exactly what this run started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def enqueue(self, peer: Peer, kind: str, jobs: int) -> float:
        name = f"{peer.key}-enqueue-{kind}"
        cmd = [sys.executable, "-m", "peer_common", "enqueue", peer.module, kind, str(jobs)]
        if peer.enqueuer is not None:
            cmd = peer.enqueuer(kind, jobs)
        proc = self.children.start(name, cmd, self.env)
        try:
            code = proc.wait(timeout=self.args.timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"enqueue took over {self.args.timeout:.0f}s") from None
        finally:
            self.stop(proc)
        out = self.children.log_tail(name, 100_000)
        if code != 0:
            raise RuntimeError(f"enqueue exited with {code}: {last_line(out)}")
        lines = [line for line in out.splitlines() if line.startswith('{"seconds"')]
        return float(json.loads(lines[-1])["seconds"])

    def wait(
        self,
        proc: subprocess.Popen[bytes],
        name: str,
        check: Callable[[], bool],
        poll: float = 0.05,
    ) -> float:
        try:
            return wait_until(check, self.args.timeout, name, proc=proc, poll=poll)
        except (RuntimeError, TimeoutError) as exc:
            raise type(exc)(f"{exc}: {last_line(self.children.log_tail(name))}") from None

    def drain(self, peer: Peer, kind: str, jobs: int) -> float:
        """Jobs/s between the first and the last job, as the jobs recorded them."""
        name = f"{peer.key}-worker-{kind}"
        proc = self.children.start(name, peer.worker(kind, self.url), self.env)
        try:
            self.wait(proc, name, lambda: self.client.exists("bench:last") == 1)
        finally:
            self.stop(proc)
        first = float(self.client.get("bench:first") or 0)
        last = float(self.client.get("bench:last") or 0)
        if not 0 < first < last:
            raise RuntimeError(f"no interval between first and last job ({first}, {last})")
        # 10 ms jobs finish in waves of CONCURRENCY: the first wave ends at the first mark.
        return (jobs - (CONCURRENCY if kind == "sleep" else 1)) / (last - first)

    def io_drain(
        self, peer: Peer, kind: str, commands: Command, jobs: int, name: str
    ) -> tuple[float, float]:
        """The I/O workload (``kind`` incr or aincr): pre-fill ``jobs`` jobs, start the worker
        process(es) and return the steady drain (jobs/s from the end of the warm-up to the last
        job) and the CPU µs per job of every worker process and its children over that span."""
        self.client.flushall()
        self.enqueue(peer, kind, jobs)
        procs = [
            self.children.start(f"{name}-{i}", argv, {**self.env, **extra})
            for i, (argv, extra) in enumerate(commands)
        ]

        def done() -> int:
            return int(self.client.get("bench:done") or 0)

        try:
            warm = max(1, int(jobs * WARM_UP))
            self.wait(procs[0], f"{name}-0", lambda: done() >= warm, poll=0.002)
            t0, d0, cpu0 = time.perf_counter(), done(), tree_cpu(procs)
            t1 = self.wait(procs[0], f"{name}-0", lambda: done() >= jobs, poll=0.002)
            cpu1 = tree_cpu(procs)
        finally:
            for proc in procs:
                self.stop(proc)
        if d0 >= jobs or t1 <= t0:
            raise RuntimeError("the warm-up took every job; raise the job count")
        return (jobs - d0) / (t1 - t0), (cpu1 - cpu0) * 1e6 / (jobs - d0)

    def measure(self, peer: Peer) -> Result:
        result = Result()
        why = peer.missing()
        if why:
            return Result(errors=dict.fromkeys(ALL_METRICS, why))
        noop_jobs = min(self.args.jobs, peer.max_jobs or self.args.jobs)
        for kind, jobs in (("noop", noop_jobs), ("sleep", self.args.sleep_jobs)):
            metric = "noop_rate" if kind == "noop" else "sleep_rate"
            if kind == "sleep" and peer.sleep_na:
                result.errors[metric] = peer.sleep_na
                continue
            self.client.flushall()
            try:
                seconds = self.enqueue(peer, kind, jobs)
            except (RuntimeError, TimeoutError, OSError, ValueError, IndexError) as exc:
                why = f"enqueue failed: {exc}"
                result.errors[metric] = why
                if kind == "noop":
                    result.errors["bulk_rate"] = why
                continue
            if kind == "noop":
                result.bulk_rate = jobs / seconds
            try:
                setattr(result, metric, self.drain(peer, kind, jobs))
            except (RuntimeError, TimeoutError, OSError, redis.RedisError) as exc:
                result.errors[metric] = f"{type(exc).__name__}: {exc}"
        self.measure_io(peer, result)
        if "noop_rate" in result.errors:
            result.errors["p50_ms"] = result.errors["p99_ms"] = "not measured: no-op drain failed"
        elif result.noop_rate < 1.5 * self.args.rate:
            result.errors["p50_ms"] = result.errors["p99_ms"] = (
                f"its no-op drain ({result.noop_rate:,.0f}/s) is below 1.5x the latency rate "
                f"({self.args.rate}/s)"
            )
        else:
            try:
                result.p50_ms, result.p99_ms = self.latency(peer)
            except (RuntimeError, TimeoutError, OSError, ValueError, redis.RedisError) as exc:
                result.errors["p50_ms"] = result.errors["p99_ms"] = f"{type(exc).__name__}: {exc}"
        self.client.flushall()
        return result

    def measure_io(self, peer: Peer, result: Result) -> None:
        """The I/O workload with the peer's default worker (concurrency 10, one process)."""
        if peer.sleep_na:  # one job at a time per process: not comparable at concurrency 10
            result.errors["io_rate"] = result.errors["io_cpu_us"] = peer.sleep_na
            return
        jobs = min(self.args.io_jobs, peer.max_jobs or self.args.io_jobs)
        try:
            result.io_rate, result.io_cpu_us = self.io_drain(
                peer, "incr", [(peer.worker("incr", self.url), {})], jobs, f"{peer.key}-io"
            )
        except (RuntimeError, TimeoutError, OSError, ValueError, redis.RedisError) as exc:
            result.errors["io_rate"] = result.errors["io_cpu_us"] = f"{type(exc).__name__}: {exc}"

    def latency(self, peer: Peer) -> tuple[float, float]:
        """p50 and p99 (ms) from enqueue to start, the worker idle and warm."""
        count = max(2, int(self.args.rate * self.args.duration))
        self.client.flushall()
        name = f"{peer.key}-worker-latency"
        proc = self.children.start(name, peer.worker("noop", self.url), self.env)
        try:
            self.enqueue(peer, "noop", 2)  # the worker is ready once these two have run
            self.wait(proc, name, lambda: self.client.exists("bench:last") == 1)
            time.sleep(0.5)
            self.enqueue(peer, "latency", count)
            self.wait(proc, name, lambda: self.client.llen("bench:latency") >= count)
        finally:
            self.stop(proc)
        samples = sorted(float(x) * 1000 for x in self.client.lrange("bench:latency", 0, -1))
        cuts = statistics.quantiles(samples, n=100, method="inclusive")
        return cuts[49], cuts[98]


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


# -- report ---------------------------------------------------------------------------------------
METRICS = [("noop_rate", "no-op drain"), ("bulk_rate", "bulk enqueue"), ("sleep_rate", "10 ms")]
LATENCY = [("p50_ms", "latency p50"), ("p99_ms", "latency p99")]
IO = [("io_rate", "INCR drain"), ("io_cpu_us", "INCR CPU per job")]
ALL_METRICS = [attr for attr, _ in METRICS + LATENCY + IO]


def ratio_text(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def versions(peers: list[Peer]) -> str:
    seen: dict[str, str] = {}
    if any(p.key == "sidekiq" for p in peers):
        seen["Ruby Sidekiq"] = sidekiq_version() or "not installed"
    for dist in ["redis", "hiredis"] + [d for p in peers for d in p.dists]:
        try:
            seen[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            seen[dist] = "not installed"
    return ", ".join(f"{d} {v}" for d, v in seen.items())


def table(
    peers: list[Peer], results: dict[str, Result], metrics: list[tuple[str, str]], fmt: str
) -> list[str]:
    ours = results.get("conveyor")
    lines = []
    for peer in peers:
        r = results[peer.key]
        cells = []
        for attr, _ in metrics:
            if attr in r.errors:
                cells += ["n/a", "n/a"]
                continue
            value = getattr(r, attr)
            ratio = "n/a"
            if ours is not None and attr not in ours.errors and value:
                ratio = ratio_text(getattr(ours, attr) / value)
            cells += [format(value, fmt), ratio]
        lines.append(f"| {peer.label} | {' | '.join(cells)} |")
    return lines


def report(
    peers: list[Peer], results: dict[str, Result], header: list[str], args: argparse.Namespace
) -> str:
    now = dt.datetime.now(dt.UTC)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"# Conveyor against Sidekiq and the Python peers, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{shlex.join(['python', '-m', 'benchmarks.peers', *args.argv])}`",
        "",
        *header,
        f"- load average at the end: {load}",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        f"{args.jobs:,} no-op jobs and {args.sleep_jobs:,} jobs sleeping 10 ms; one worker "
        "process each. The machine is shared and all processes (Redis, worker, harness) share "
        "its cores: compare the ratios, measured in the same run on the same Redis.",
        "",
        "| peer | no-op drain, jobs/s | Conveyor/peer | bulk enqueue, jobs/s | Conveyor/peer "
        "| 10 ms jobs, jobs/s | Conveyor/peer |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *table(peers, results, METRICS, ",.0f"),
        "",
        f"Latency, enqueue to start, at {args.rate:,} jobs/s for {args.duration:g} s (lower is "
        "better: a ratio below 1 means Conveyor is faster):",
        "",
        "| peer | p50, ms | Conveyor/peer | p99, ms | Conveyor/peer |",
        "|---|---:|---:|---:|---:|",
        *table(peers, results, LATENCY, ".2f"),
        "",
        f"The I/O workload: {args.io_jobs:,} jobs, each one `INCR` on the job's own client "
        "(`redis.asyncio` in the async libraries), the default worker settings above; steady "
        "drain from 10% of the jobs done to the last, and the CPU of every worker process "
        "over that span (for CPU, below 1 means Conveyor spends less):",
        "",
        "| peer | INCR drain, jobs/s | Conveyor/peer | worker CPU, µs/job | Conveyor/peer |",
        "|---|---:|---:|---:|---:|",
        *table(peers, results, IO, ",.0f"),
        "",
        "| peer | worker settings | bulk enqueue API |",
        "|---|---|---|",
        *(f"| {p.label} | {p.settings} | {p.bulk_api} |" for p in peers),
        "",
    ]
    missing = [
        f"- {p.label}, {label}: {results[p.key].errors[attr]}"
        for p in peers
        for attr, label in METRICS + LATENCY[:1] + IO[:1]
        if attr in results[p.key].errors
    ]
    if missing:
        lines += ["n/a:", "", *missing, ""]
    lines += [NOTES]
    return "\n".join(lines)


NOTES = """\
How it was measured:

- One `redis-server` for the whole run; `FLUSHALL` before each workload of each peer.
- No-op drain: the jobs are pushed first, then one worker process is started on them. The jobs
  time themselves, as in `benchmarks.core`'s no-op drain: the first job and a final marker job
  (pushed last) write `time.time()` to Redis, and the rate is the jobs between them over that
  interval, so interpreter boot and the library's start-up are excluded.
- Bulk enqueue: the pre-fill of the no-op drain, timed inside the pushing process after it
  connected (interpreter boot and imports excluded), with the API in the second table.
- 10 ms jobs: each sleeps 10 ms (`time.sleep`, or `asyncio.sleep` in the async libraries) and
  then `INCR`s a counter; the jobs that see 1 and the total write the time, so the rate is
  from the first to the last completion, counting the jobs after the first wave of 10.
  Concurrency 10 in every peer (its ceiling is 1000/s).
- Latency: the worker is started and runs two no-op jobs (so it is ready), then one producer
  process pushes one job at a time (single enqueues, never the batch API) at `--rate` for
  `--duration`; each job pushes `now - sent`. Skipped (n/a) for a peer whose no-op drain is below
  1.5x that rate, where the figure would measure the queue growing, not the latency.
- Every peer writes the markers with the same redis-py client (`redis.asyncio` in the async
  ones). Per-job INFO logging is off everywhere (WARNING), as Conveyor logs nothing per job.
"""


def describe(client: redis.Redis, binary: str, peers: list[Peer]) -> list[str]:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"- host: {socket.gethostname()}; CPU: {cpu_model()}; {os.cpu_count()} logical CPUs "
        f"(shared with other work); load average at start: {load}",
        f"- Python {platform.python_version()}; {versions(peers)}",
        f"- Redis {client.info('server')['redis_version']} ({binary}), started by the harness, "
        "persistence off",
    ]


# -- main -----------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers", description=__doc__.split("\n\n")[0]
    )
    keys = ", ".join(p.key for p in PEERS)
    parser.add_argument("--jobs", type=int, default=5_000, help="no-op jobs per drain")
    parser.add_argument("--sleep-jobs", type=int, default=2_000, help="10 ms jobs per drain")
    parser.add_argument("--io-jobs", type=int, default=5_000, help="INCR jobs per drain")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"measure only this peer (repeatable; a prefix such as rq works): {keys}",
    )
    parser.add_argument("--rate", type=int, default=100, help="latency producer, jobs/s")
    parser.add_argument("--duration", type=float, default=5.0, help="latency phase, seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="limit for each wait, s")
    parser.add_argument("--redis-server", help="redis-server binary (default: the newest found)")
    parser.add_argument("--note", default="", help="a line for the report, e.g. other load")
    parser.add_argument(
        "--results-dir", type=Path, default=HERE / "results", help="where peers-<date>.md goes"
    )
    args = parser.parse_args(argv)
    if min(args.jobs, args.sleep_jobs) < 2 or args.io_jobs < 10 or args.rate < 1:
        parser.error("--jobs and --sleep-jobs must be >= 2, --io-jobs >= 10 and --rate >= 1")
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    args.argv = argv
    return args


def selected(only: list[str]) -> list[Peer]:
    if not only:
        return PEERS
    unknown = [n for n in only if not any(p.key.startswith(n) for p in PEERS)]
    if unknown:
        raise SystemExit(f"unknown peer {unknown[0]!r}; choose from {[p.key for p in PEERS]}")
    # Conveyor always runs: the ratios need it.
    return [p for p in PEERS if p.key == "conveyor" or any(p.key.startswith(n) for n in only)]


def run(args: argparse.Namespace) -> int:
    peers = selected(args.only)
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-peers-"))
    children = Children(workdir)
    results: dict[str, Result] = {}
    header: list[str] = []
    try:
        with terminate_on_sigterm():
            binary = pick_redis_server(args.redis_server)
            client = start_redis(children, binary, workdir)
            header = describe(client, binary, peers)
            runner = Runner(children, client, args)
            for peer in peers:
                print(f"measuring {peer.label} ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                try:
                    results[peer.key] = runner.measure(peer)
                except Exception as exc:  # one broken peer must not end the run
                    why = f"{type(exc).__name__}: {exc}"
                    results[peer.key] = Result(errors=dict.fromkeys(ALL_METRICS, why))
                for metric, why in results[peer.key].errors.items():
                    print(f"  {metric} n/a: {why}", file=sys.stderr)
                print(f"  {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
            client.close()
    finally:
        groups = [proc.pid for _, proc in children.procs]
        children.close()
        for pgid in groups:  # forked children of a worker stopped mid-run (Ctrl-C, SIGTERM)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)

    text = report(peers, results, header, args)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"peers-{dt.datetime.now(dt.UTC):%Y-%m-%d}.md"
    path.write_text(text)
    print(f"written to {path}", file=sys.stderr)
    return 1 if results.get("conveyor") is None or results["conveyor"].errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
