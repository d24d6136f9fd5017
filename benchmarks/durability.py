"""What durability costs an enqueue: latency of ``perform_async`` in each mode.

    python -m benchmarks.durability [--jobs 3000] [--bulk 20] [--redis-server PATH]

Modes, each measured in the same run on this machine:

1. ``default``: a primary with one replica attached (AOF off), ``min_replicas=0``: the push
   returns once the primary has it; replication follows asynchronously.
2. ``min_replicas=1``: the same pair; each push is followed by ``WAIT 1`` in the same round
   trip, so it returns once the replica has acknowledged it.
3. ``embedded everysec``: the embedded server (Unix socket, AOF with ``appendfsync everysec``,
   the default) under a temporary state directory.
4. ``embedded always``: the same with ``embedded_fsync="always"``: an fsync per write.

For each, ``--jobs`` single enqueues are timed one by one (after 200 unmeasured ones) and
reported as p50/p99/mean in microseconds, then ``--bulk`` bulk enqueues of 1000 jobs give
jobs/s. The numbers depend on the disk under the state directory (printed) and on the load of
the machine: compare modes within one run, not across machines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.harness import Children, command_output, free_port, pick_redis_server
from conveyor import App, Job, Settings
from conveyor.redis.embedded import find_server_binary, server_version, stop_server

WARMUP = 200


@dataclass
class Row:
    mode: str
    p50_us: float
    p99_us: float
    mean_us: float
    bulk_jobs_s: float


class Noop(Job):
    def perform(self, n: int) -> None: ...


def measure(mode: str, settings: Settings, jobs: int, bulks: int) -> Row:
    """Time ``jobs`` single enqueues and ``bulks`` bulk enqueues of 1000 on ``settings``."""
    app = App(settings)
    app.register(Noop)
    try:
        for n in range(WARMUP):
            Noop.perform_async(n)
        samples = []
        for n in range(jobs):
            start = time.perf_counter()
            Noop.perform_async(n)
            samples.append((time.perf_counter() - start) * 1e6)
        args = [[n] for n in range(1000)]
        start = time.perf_counter()
        for _ in range(bulks):
            Noop.bulk_perform_async(args)
        bulk_rate = bulks * 1000 / (time.perf_counter() - start)
        app.store.client.flushdb()
    finally:
        app.close()
    samples.sort()
    return Row(
        mode=mode,
        p50_us=samples[len(samples) // 2],
        p99_us=samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        mean_us=statistics.fmean(samples),
        bulk_jobs_s=bulk_rate,
    )


@contextlib.contextmanager
def replicated_pair(binary: str, workdir: Path) -> Iterator[str]:
    """A primary and one replica on free ports; yields the primary's URL."""
    children = Children(workdir)
    primary, replica = free_port(), free_port()
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    try:
        for name, port, extra in (
            ("primary", primary, []),
            ("replica", replica, ["--replicaof", "127.0.0.1", str(primary)]),
        ):
            directory = workdir / name
            directory.mkdir()
            cmd = [binary, "--port", str(port), *common, "--dir", str(directory), *extra]
            children.start(name, cmd, dict(os.environ))
        client = redis.Redis(port=replica, decode_responses=True)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.info("replication").get("master_link_status") == "up":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the replica did not sync within 30s")
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{primary}/0"
    finally:
        children.close()


def version(binary: str) -> str:
    return ".".join(map(str, server_version(binary))) + f" ({binary})"


def filesystem(path: str) -> str:
    out = command_output(["df", "-T", path]).splitlines()
    return out[-1].split()[1] if len(out) > 1 else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000, help="single enqueues per mode")
    parser.add_argument("--bulk", type=int, default=20, help="bulk enqueues of 1000 per mode")
    parser.add_argument("--redis-server", help="redis-server binary (default: newest found)")
    opts = parser.parse_args()
    binary = pick_redis_server(opts.redis_server)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="cvd-") as tmp:
        with replicated_pair(binary, Path(tmp)) as url:
            rows.append(measure("default", Settings(redis_url=url), opts.jobs, opts.bulk))
            durable = Settings(redis_url=url, min_replicas=1)
            rows.append(measure("min_replicas=1", durable, opts.jobs, opts.bulk))
        for fsync in ("everysec", "always"):
            state = tempfile.mkdtemp(prefix="cv-", dir=tmp)  # short: a Unix socket path
            try:
                settings = Settings(state_dir=state, embedded_fsync=fsync)
                rows.append(measure(f"embedded {fsync}", settings, opts.jobs, opts.bulk))
            finally:
                stop_server(state)
        fs = filesystem(tmp)
    embedded = find_server_binary()
    print(f"\npair: {version(binary)}; embedded: {version(embedded)}; state directory on {fs}")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{opts.jobs} single enqueues per mode (perform_async), {opts.bulk} x 1000 in bulk\n")
    print("| mode | p50 µs | p99 µs | mean µs | bulk jobs/s |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row.mode} | {row.p50_us:.0f} | {row.p99_us:.0f} | {row.mean_us:.0f} "
            f"| {row.bulk_jobs_s:,.0f} |"
        )


if __name__ == "__main__":
    main()
