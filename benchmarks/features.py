"""Cost of the features on the hot path: the same no-op job, plain, deduplicated and
concurrency-limited, drained by one worker process (10 threads) on one local Redis, in one run.

    python -m benchmarks.features [--jobs 20000] [--rounds 2]

Each variant is bulk-enqueued (unique arguments, so nothing is dropped as a duplicate), then one
worker process drains it; completions are read from ``stat:processed`` (a deferred job is not
counted until it really ran). Rounds alternate the variants to spread the machine's noise. The
report gives each variant's rates and its ratio to the plain job, and is written to
``benchmarks/results/features-<date>.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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
    wait_until,
)
from conveyor import Settings

HERE = Path(__file__).resolve().parent


def run_variant(
    children: Children, client: redis.Redis, variant: str, jobs: int
) -> tuple[float, float]:
    """(enqueue jobs/s, steady drain jobs/s) for one variant."""
    client.flushall()
    app = create_app(Settings(redis_url=redis_url(client)))
    job = app.registry[class_name(variant)]
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
        at_first = processed()
        last = wait_until(lambda: processed() >= jobs, 300, "the drain", proc=proc)
    finally:
        children.stop(proc)
    return enqueue_rate, (jobs - at_first) / (last - first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)

    rates: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp:
        children = Children(Path(tmp))
        try:
            client = start_redis(children, pick_redis_server(None), Path(tmp))
            for round_no in range(args.rounds):
                order = list(VARIANTS) if round_no % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    rates[variant].append(run_variant(children, client, variant, args.jobs))
                    print(f"round {round_no + 1}: {variant}: {rates[variant][-1]}", flush=True)
        finally:
            children.close()

    plain_enq = statistics.median(r[0] for r in rates["plain"])
    plain_drain = statistics.median(r[1] for r in rates["plain"])
    lines = [
        f"# Feature cost benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `python -m benchmarks.features --jobs {args.jobs} --rounds {args.rounds}`",
        "",
        f"- CPU: {cpu_model()}; {os.cpu_count()} logical CPUs; load average at end: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "- one worker process, 10 threads; no-op jobs; medians over the rounds",
        "",
        "| variant | enqueue jobs/s | vs plain | drain jobs/s | vs plain |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, samples in rates.items():
        enq = statistics.median(s[0] for s in samples)
        drain = statistics.median(s[1] for s in samples)
        lines.append(
            f"| {variant} | {enq:,.0f} | {enq / plain_enq:.2f} | {drain:,.0f} | "
            f"{drain / plain_drain:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"features-{dt.date.today()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
