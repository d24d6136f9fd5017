"""Cost of tracking a bulk operation: the same 100,000-entity operation run tracked (feature
flag on: operation hash, counting script, failed items, completion job, e-mail rendered) and
untracked (flag off: the legacy batches), by one worker process (10 threads) on one local Redis.

    python -m benchmarks.operations [--entities 100000] [--batch-size 100] [--rounds 2]

Each run: flush, start the worker and wait until it is registered, call the service
(``BulkOperations.start``), and stop the clock when every job of the operation was acknowledged
(``stat:processed``: scheduler + batches, + the completion job when tracked). Entities are
no-ops apart from every ``--fail-every``-th being refused, so the figures are the worst case
for the overhead (real per-entity work dilutes it). The worker counts its Redis round trips
(requests written to a connection) in total and inside each job body. Rounds alternate the
order. The report is printed and written to ``benchmarks/results/operations-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.harness import (
    ROOT,
    Children,
    cpu_model,
    pick_redis_server,
    redis_url,
    start_redis,
    wait_until,
)
from benchmarks.operation_jobs import OPERATION, create_app
from conveyor import Settings
from conveyor.features.flags import Flags

HERE = Path(__file__).resolve().parent
VARIANTS = ("untracked", "tracked")


@dataclass
class Run:
    seconds: float
    jobs: int
    total_roundtrips: int
    per_call: dict[str, list[int]]
    failed_items: int


def run_variant(
    children: Children, client: redis.Redis, variant: str, args: argparse.Namespace, tmp: Path
) -> Run:
    client.flushall()
    url = redis_url(client)
    app, ops = create_app(Settings(redis_url=url), args.batch_size)
    flags = Flags(app, cache_ttl=0)
    (flags.enable if variant == "tracked" else flags.disable)(ops.settings.flag)
    trips_file = tmp / f"trips-{variant}-{time.monotonic_ns()}.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(
        CONVEYOR_REDIS_URL=url,
        CONVEYOR_CONCURRENCY="10",
        BENCH_ROUNDTRIPS_FILE=str(trips_file),
    )
    proc = children.start(
        f"worker-{variant}", [sys.executable, "-m", "benchmarks.operation_jobs"], env
    )
    batches = -(-args.entities // args.batch_size)
    jobs = 1 + batches + (1 if variant == "tracked" else 0)
    try:
        wait_until(lambda: client.scard("processes") > 0, 60, "the worker", proc=proc)
        started = time.perf_counter()
        result = ops.start(OPERATION, 1, {"n": args.entities, "fail_every": args.fail_every})
        done = wait_until(
            lambda: int(client.get("stat:processed") or 0) >= jobs,
            args.timeout,
            f"{variant}: {jobs} jobs",
            proc=proc,
            poll=0.01,
        )
        finished = ops.store.finished(result.jid) if variant == "tracked" else None
    finally:
        children.stop(proc)
        app.close()
    trips = json.loads(trips_file.read_text())
    failed = int(finished["failed_items"]) if finished else 0
    if variant == "tracked" and (finished is None or int(finished["total_items"]) != args.entities):
        raise RuntimeError(f"tracked run did not finish with {args.entities} items: {finished}")
    return Run(done - started, jobs, int(trips["total"]), trips["calls"], failed)


def mean(values: list[int]) -> float:
    return statistics.fmean(values) if values else 0.0


def report(runs: dict[str, list[Run]], args: argparse.Namespace) -> str:
    batches = -(-args.entities // args.batch_size)
    base = statistics.median(r.seconds for r in runs["untracked"])
    lines = [
        f"# Bulk operation tracking benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `python -m benchmarks.operations --entities {args.entities} "
        f"--batch-size {args.batch_size} --fail-every {args.fail_every} --rounds {args.rounds}`",
        "",
        f"- CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average at end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"- {args.entities:,} entities in {batches:,} batches of {args.batch_size}; no-op "
        f"entities, every {args.fail_every}th refused (service_error); one worker process, "
        "10 threads; medians over the rounds; e-mail rendered, not sent",
        "",
        "| path | seconds | vs untracked | entities/s | round trips in a batch job body "
        "(median / mean) | worker round trips per batch (all threads) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        samples = runs[variant]
        seconds = statistics.median(r.seconds for r in samples)
        key = "run_batch" if variant == "tracked" else "run_legacy_batch"
        calls = [n for r in samples for n in r.per_call.get(key, [])]
        body = f"{statistics.median(calls) if calls else 0:.0f} / {mean(calls):.3f}"
        total = statistics.median(r.total_roundtrips / batches for r in samples)
        lines.append(
            f"| {variant} | {seconds:.2f} | {seconds / base:.2f} | "
            f"{args.entities / seconds:,.0f} | {body} | {total:.2f} |"
        )
    tracked = runs["tracked"][-1]
    lines += [
        "",
        f"Tracked run: failed items recorded {tracked.failed_items:,}; round trips in the "
        f"scheduler job {mean(tracked.per_call.get('schedule', [])):.0f} (untracked "
        f"{mean(runs['untracked'][-1].per_call.get('schedule', [])):.0f}), in the completion "
        f"job {mean(tracked.per_call.get('complete', [])):.0f}.",
        "",
        "The mean exceeds the median by one-off costs: each worker thread's first connection "
        "(redis-py's CLIENT SETINFO handshake) and the first EVALSHA of the counting script "
        "(NOSCRIPT, then SCRIPT LOAD). Untracked batch bodies never touch Redis.",
        "",
        "Per-round seconds: "
        + "; ".join(f"{v}: " + ", ".join(f"{r.seconds:.2f}" for r in runs[v]) for v in VARIANTS),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--fail-every", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-ops-") as tmp:
        children = Children(Path(tmp))
        try:
            client = start_redis(children, pick_redis_server(None), Path(tmp))
            for round_no in range(args.rounds):
                order = VARIANTS if round_no % 2 == 0 else tuple(reversed(VARIANTS))
                for variant in order:
                    run = run_variant(children, client, variant, args, Path(tmp))
                    runs[variant].append(run)
                    print(
                        f"round {round_no + 1}: {variant}: {run.seconds:.2f}s, "
                        f"{run.total_roundtrips} round trips",
                        flush=True,
                    )
        finally:
            children.close()
    text = report(runs, args)
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"operations-{dt.date.today()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
