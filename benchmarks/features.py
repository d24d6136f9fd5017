"""Cost of the features on the hot path: the same job, plain, deduplicated and
concurrency-limited, drained by one worker process (10 threads) on one local Redis, in one run;
both as a no-op and as the I/O workload (one ``INCR`` on the job's own client).

    python -m benchmarks.features [--jobs 20000] [--rounds 2] [--workload noop|incr]

Each variant is bulk-enqueued (unique arguments, so nothing is dropped as a duplicate), then one
worker process drains it; completions are read from ``stat:processed`` (a deferred job is not
counted until it really ran). Rounds alternate the variants to spread the machine's noise. The
report gives each variant's rates, the worker's CPU per job and the ratios to the plain job,
and is written to
``benchmarks/results/features-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis

from benchmarks.feature_jobs import VARIANTS, class_name, create_app
from benchmarks.harness import (
    ROOT,
    Children,
    cpu_model,
    pick_redis_server,
    redis_url,
    start_redis,
    tree_cpu,
    wait_until,
)
from conveyor import Settings

HERE = Path(__file__).resolve().parent


def run_variant(
    children: Children, client: redis.Redis, variant: str, jobs: int, workload: str
) -> tuple[float, float, float]:
    """(enqueue jobs/s, steady drain jobs/s, worker CPU µs per job) for one variant."""
    client.flushall()
    app = create_app(Settings(redis_url=redis_url(client)))
    job = app.registry[class_name(variant, workload)]
    started = time.perf_counter()
    job.bulk_perform_async([[i] for i in range(jobs)], batch_size=1000)
    enqueue_rate = jobs / (time.perf_counter() - started)
    app.close()
    if client.llen("queue:default") != jobs:
        raise RuntimeError(f"{variant}: not every job was enqueued")

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["CONVEYOR_REDIS_URL"] = redis_url(client)
    env["CONVEYOR_CONCURRENCY"] = "10"
    proc = children.start("feature-worker", [sys.executable, "-m", "benchmarks.feature_jobs"], env)

    def processed() -> int:
        return int(client.get("stat:processed") or 0)

    try:
        first = wait_until(lambda: processed() > 0, 120, "the first job", proc=proc)
        at_first, cpu_first = processed(), tree_cpu([proc])
        last = wait_until(lambda: processed() >= jobs, 300, "the drain", proc=proc)
        cpu_last = tree_cpu([proc])
    finally:
        children.stop(proc)
    counted = jobs - at_first
    return enqueue_rate, counted / (last - first), (cpu_last - cpu_first) * 1e6 / counted


def table(rates: dict[str, list[tuple[float, float, float]]]) -> list[str]:
    """Medians over the rounds, each with its ratio to the plain job."""
    plain = [statistics.median(r[i] for r in rates["plain"]) for i in range(3)]
    lines = [
        "| variant | enqueue jobs/s | vs plain | drain jobs/s | vs plain | worker CPU µs/job "
        "| vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for variant, samples in rates.items():
        enq, drain, cpu = (statistics.median(s[i] for s in samples) for i in range(3))
        lines.append(
            f"| {variant} | {enq:,.0f} | {enq / plain[0]:.2f} | {drain:,.0f} | "
            f"{drain / plain[1]:.2f} | {cpu:,.0f} | {cpu / plain[2]:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--workload", action="append", choices=("noop", "incr"), help="default: both"
    )
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    workloads = args.workload or ["noop", "incr"]

    rates = {w: {v: [] for v in VARIANTS} for w in workloads}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            client = start_redis(children, pick_redis_server(None), Path(tmp))
            for round_no in range(args.rounds):
                order = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
                for workload in workloads:
                    for variant in order:
                        got = run_variant(children, client, variant, args.jobs, workload)
                        rates[workload][variant].append(got)
                        print(f"round {round_no + 1}: {workload} {variant}: {got}", flush=True)
        finally:
            children.close()

    command = ["python", "-m", "benchmarks.features", *(argv if argv is not None else sys.argv[1:])]
    lines = [
        f"# Feature cost benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{shlex.join(command)}` ({args.jobs:,} jobs, {args.rounds} rounds)",
        "",
        f"- CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average at end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "- one worker process, 10 threads; medians over the rounds; the worker's CPU from the "
        "first to the last job",
    ]
    titles = {"noop": "No-op jobs", "incr": "The I/O workload: one INCR on the job's own client"}
    for workload in workloads:
        lines += ["", f"## {titles[workload]}", "", *table(rates[workload])]
    text = "\n".join(lines) + "\n"
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"features-{dt.date.today()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
