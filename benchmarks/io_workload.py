"""The I/O workload, reported by ``benchmarks.core`` beside the no-op one: every job makes one
Redis call of its own (``INCR`` on the job's own client, the shape of a real job), drained by
Conveyor (threads, ``async def`` on threads, ``async def`` under the default auto mode), Ruby
Sidekiq and the Python peers, at ``-c 1``, ``-c 10`` and two processes (one per core), with the
workers' CPU per job.

The job bodies are the peers' (``benchmarks/peers/*_jobs.py``, ``peer_common.incr``/``aincr``),
enqueued through :class:`benchmarks.peers.Runner`, so the comparison uses the same jobs as
``benchmarks.peers``. See benchmarks/README.md.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.peers import PEERS, SIDEKIQ_MAIN, Command, Peer, Runner, script

#: Engines in report order; ratios are against Sidekiq at the same concurrency and processes.
ENGINES = ("sidekiq", "conveyor", "dramatiq", "huey")


@dataclass(frozen=True)
class Variant:
    """One way to drain the workload: an engine, its settings and the job flavour."""

    engine: str  # a peer key of benchmarks.peers.PEERS
    settings: str  # shown in the report
    kind: str  # "incr" (sync job) or "aincr" (async def job on redis.asyncio)
    concurrency: int
    processes: int
    commands: Callable[[], Command]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.concurrency, self.processes)

    @property
    def name(self) -> str:
        return f"io-{self.engine}-{self.kind}-c{self.concurrency}-p{self.processes}"


def _conveyor(
    mode: str | None,
    concurrency: int,
    processes: int,
    *,
    pooled: bool = False,
    own: bool = False,
    affinity: str | None = None,
) -> Callable[[], Command]:
    """``mode`` None: the default (``auto``) on the app of only ``async def`` jobs, which it
    runs in asyncio mode. ``pooled``: the job's client is one pooled client shared by the
    threads instead of one per thread (peer_common). ``own``: an ``async def`` job calls
    through ``app.aredis()`` (its slot's own connection) instead of a pooled redis.asyncio
    client. ``affinity``: ``--cpu-affinity`` (the default is ``auto``)."""
    target = "conveyor_jobs:async_app" if mode is None else "conveyor_jobs:app"
    argv = [sys.executable, "-m", "conveyor.cli", "worker", "-r", target]
    argv += ["-c", str(concurrency), "-p", str(processes), "--log-level", "WARNING"]
    if mode is not None:
        argv += ["--mode", mode]
    if affinity is not None:
        argv += ["--cpu-affinity", affinity]
    env = {"BENCH_JOB_CLIENT": "pooled"} if pooled else {"BENCH_JOB_CLIENT": "own"} if own else {}
    return lambda: [(argv, env)]


def _sidekiq(concurrency: int, processes: int) -> Callable[[], Command]:
    one = (["ruby", SIDEKIQ_MAIN, "worker"], {"BENCH_CONCURRENCY": str(concurrency)})
    return lambda: [one] * processes


def _dramatiq(concurrency: int, processes: int, asynchronous: bool) -> Callable[[], Command]:
    argv = [script("dramatiq"), "dramatiq_jobs", "-p", str(processes), "-t", str(concurrency)]
    return lambda: [(argv, {"BENCH_ASYNC": "1"} if asynchronous else {})]


def _huey(concurrency: int) -> Callable[[], Command]:
    argv = [script("huey_consumer"), "huey_jobs.huey", "-k", "thread", "-w", str(concurrency)]
    return lambda: [([*argv, "-q"], {})]


def variants(cores: int) -> list[Variant]:
    """Every variant measured, for a machine of ``cores`` cores (the multi-process rows run
    one process per core, each at concurrency 10)."""
    out: list[Variant] = []
    for c in (1, 10):
        out += [
            Variant("sidekiq", f"`sidekiq -c {c}`", "incr", c, 1, _sidekiq(c, 1)),
            Variant("conveyor", f"threads, `-c {c}`", "incr", c, 1, _conveyor("threads", c, 1)),
            Variant(
                "conveyor", f"threads, async def, `-c {c}`", "aincr", c, 1,
                _conveyor("threads", c, 1),
            ),
            Variant(
                "conveyor", f"threads, `-c {c}`, `--cpu-affinity none`", "incr", c, 1,
                _conveyor("threads", c, 1, affinity="none"),
            ),
            Variant(
                "conveyor", f"threads, `-c {c}`, job client pooled", "incr", c, 1,
                _conveyor("threads", c, 1, pooled=True),
            ),
            Variant(
                "conveyor", f"async def only, default (auto: asyncio), `-c {c}`", "aincr", c, 1,
                _conveyor(None, c, 1),
            ),
            Variant(
                "conveyor", f"async def only, default (auto: asyncio), `-c {c}`, job client "
                "app.aredis()", "aincr", c, 1, _conveyor(None, c, 1, own=True),
            ),
            Variant("dramatiq", f"`-p 1 -t {c}`", "incr", c, 1, _dramatiq(c, 1, False)),
            Variant(
                "dramatiq", f"`-p 1 -t {c}`, async def (AsyncIO)", "aincr", c, 1,
                _dramatiq(c, 1, True),
            ),
            Variant("huey", f"`-k thread -w {c}`", "incr", c, 1, _huey(c)),
        ]  # fmt: skip
    p = cores
    out += [
        Variant("sidekiq", f"{p} x `sidekiq -c 10`", "incr", 10, p, _sidekiq(10, p)),
        Variant("conveyor", f"threads, `-p {p} -c 10`", "incr", 10, p, _conveyor("threads", 10, p)),
        Variant(
            "conveyor", f"threads, `-p {p} -c 10 --cpu-affinity none`", "incr", 10, p,
            _conveyor("threads", 10, p, affinity="none"),
        ),
        Variant(
            "conveyor", f"async def only, default (auto: asyncio), `-p {p} -c 10`", "aincr", 10, p,
            _conveyor(None, 10, p),
        ),
        Variant("dramatiq", f"`-p {p} -t 10`", "incr", 10, p, _dramatiq(10, p, False)),
    ]  # fmt: skip
    return out


@dataclass
class IoResult:
    variant: Variant
    rate: float = 0.0  # jobs/s after the warm-up (the median over the rounds)
    cpu_us: float = 0.0  # worker CPU (every process of the variant) per job, µs (median)
    error: str = ""
    rates: tuple[float, ...] = ()  # every round's rate

    @staticmethod
    def median(variant: Variant, rounds: list[IoResult]) -> IoResult:
        """The median of the rounds that worked (n/a when none did)."""
        ok = [r for r in rounds if not r.error]
        if not ok:
            return rounds[-1]
        rates = tuple(r.rate for r in ok)
        cpu = statistics.median(r.cpu_us for r in ok)
        return IoResult(variant, statistics.median(rates), cpu, rates=rates)


def measure(runner: Runner, variant: Variant, jobs: int) -> IoResult:
    """One variant's steady drain and CPU per job (see :meth:`Runner.io_drain`)."""
    why = _peer(variant.engine).missing()
    if why:
        return IoResult(variant, error=why)
    try:
        rate, cpu_us = runner.io_drain(
            _peer(variant.engine), variant.kind, variant.commands(), jobs, variant.name
        )
    except (RuntimeError, TimeoutError) as exc:
        return IoResult(variant, error=str(exc))
    return IoResult(variant, rate, cpu_us)


def _peer(key: str) -> Peer:
    return next(p for p in PEERS if p.key == key)


def run_all(
    runner: Runner, jobs: int, engines: tuple[str, ...] = ENGINES, rounds: int = 1
) -> list[IoResult]:
    """Every variant of ``engines``, ``rounds`` times (every other round in reverse order, to
    spread the machine's noise), as medians; progress on stderr. A failing variant is n/a
    and the run goes on."""
    chosen = [v for v in variants(len(os.sched_getaffinity(0))) if v.engine in engines]
    runs: dict[Variant, list[IoResult]] = {v: [] for v in chosen}
    for round_no in range(rounds):
        for variant in chosen if round_no % 2 == 0 else reversed(chosen):
            print(f"  I/O workload: {variant.engine} {variant.settings} ...", file=sys.stderr)
            try:
                got = measure(runner, variant, jobs)
            except Exception as exc:  # one broken peer must not end the run
                got = IoResult(variant, error=f"{type(exc).__name__}: {exc}")
            if got.error:
                print(f"    n/a: {got.error}", file=sys.stderr)
            runs[variant].append(got)
    return [IoResult.median(v, runs[v]) for v in chosen]


def table(results: list[IoResult]) -> list[str]:
    """Markdown rows: each variant with its ratio to Sidekiq at the same shape."""
    sidekiq = {r.variant.shape: r for r in results if r.variant.engine == "sidekiq" and not r.error}
    lines = [
        "| engine | settings | job | steady drain, jobs/s | ÷ Sidekiq | worker CPU µs/job "
        "| ÷ Sidekiq | drain in each round |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    order = {e: i for i, e in enumerate(ENGINES)}
    for r in sorted(results, key=lambda r: (r.variant.shape, order[r.variant.engine])):
        v = r.variant
        job = "async def" if v.kind == "aincr" else "sync"
        label = _peer(v.engine).label
        if r.error:
            lines.append(f"| {label} | {v.settings} | {job} | n/a | | n/a | | |")
            continue
        ref = sidekiq.get(v.shape)
        rate_ratio = f"{r.rate / ref.rate:.2f}" if ref else "n/a"
        cpu_ratio = f"{r.cpu_us / ref.cpu_us:.2f}" if ref and ref.cpu_us else "n/a"
        each = ", ".join(f"{x:,.0f}" for x in r.rates)
        lines.append(
            f"| {label} | {v.settings} | {job} | {r.rate:,.0f} | {rate_ratio} "
            f"| {r.cpu_us:,.0f} | {cpu_ratio} | {each} |"
        )
    missing = [
        f"- {_peer(r.variant.engine).label} {r.variant.settings}: {r.error}"
        for r in results
        if r.error
    ]
    return lines + (["", "n/a:", "", *missing] if missing else [])


NOTES = """\
The I/O workload: each job makes one Redis call of its own, `INCR bench:done` on the job's own
client, never the engine's connections: one client per worker thread on a connection of its own in
every engine (redis-py `Redis(single_connection_client=True)` in the Python engines, as the Sidekiq
job's `Thread.current[:bench_redis] ||= Redis.new`), `redis.asyncio` for `async def` jobs. "job
client pooled" rows share one pooled redis-py client between the threads instead (a pool checkout
and return around each call: the workload's definition before 2026-12-05). "job client
app.aredis()" rows make the `async def` job's call on Conveyor's `app.aredis()`, its asyncio slot's
own connection (the async counterpart of one client per thread; a plain `redis.asyncio` client
checks a connection out of its pool around each call). Threads-mode rows run on Conveyor's default
`--cpu-affinity auto` (each process on one core, moved off cores other processes keep busy;
docs/concurrency-model.md); "`--cpu-affinity none`" rows let the OS place the threads. The jobs are
pre-filled (the engine's bulk API where it has one, else a loop), then the worker process(es)
start; the harness polls the counter every 2 ms and times the drain from the moment 10% of the jobs
have run (boot and warm-up excluded) to the last one, and reads the CPU time (user + system) of
every worker process and its children at both moments. With `--io-rounds N` every variant runs N
times (every other round in reverse order) and the table gives the medians, and each round's drain.
"÷ Sidekiq" compares with Ruby Sidekiq at the same
concurrency and number of processes (for CPU per job, lower is better). Multi-process rows run
one process per core, each at concurrency 10 (Conveyor `-p N`, N Sidekiq processes, Dramatiq
`-p N`); Huey's thread workers live in one process, so it has no such row.
"""
