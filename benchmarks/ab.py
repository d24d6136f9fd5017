"""Before/after in one run: the I/O workload drained by this tree's worker and by another
checkout's (``--against``), beside Ruby Sidekiq, on one ``redis-server``, rounds alternating.

    python -m benchmarks.ab --against /tmp/conveyor-main -c 1 -c 10 --rounds 3
    python -m benchmarks.ab --against /tmp/conveyor-main -p 2 -c 10   # N processes a side

Made for measuring one change of the hot path: the rows differ only in the code (and in
``--env`` settings given per side), never in the machine's state, since the rounds interleave.
Get a checkout to compare with ``git worktree add /tmp/conveyor-main main`` (or ``git archive``).
Prints a table of steady drain and worker CPU per job (medians), with ratios to Sidekiq at
the same concurrency. Nothing is written to ``benchmarks/results``: paste what matters.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.harness import Children, pick_redis_server, start_redis, terminate_on_sigterm
from benchmarks.io_workload import Variant, _peer
from benchmarks.peers import JOBS_DIR, SIDEKIQ_MAIN, Command, Runner


def _conveyor(
    tree: Path | None, mode: str, c: int, env: dict[str, str], processes: int = 1
) -> Command:
    # -P: the working directory (this tree) must not shadow the tree measured.
    argv = [sys.executable, "-P", "-m", "conveyor.cli", "worker", "-r", "conveyor_jobs:app"]
    argv += ["-c", str(c), "-p", str(processes), "--mode", mode, "--log-level", "WARNING"]
    extra = dict(env)
    if tree is not None:
        extra["PYTHONPATH"] = f"{JOBS_DIR}:{tree}"
    return [(argv, extra)]


def variants(args: argparse.Namespace) -> list[tuple[str, Variant]]:
    """(label, variant) for every side and concurrency asked for."""
    here = Path(__file__).resolve().parent.parent
    sides = [("this tree", here, dict(e.split("=", 1) for e in args.env))]
    if args.against:
        sides.append(
            ("against", args.against.resolve(), dict(e.split("=", 1) for e in args.env_against))
        )
    kind = "aincr" if args.mode == "asyncio" or args.async_jobs else "incr"
    out: list[tuple[str, Variant]] = []
    p = args.processes
    shape = "-c {}" if p == 1 else f"-p {p} -c {{}}"
    for c in args.concurrency:
        if not args.no_sidekiq:
            one = (["ruby", SIDEKIQ_MAIN, "worker"], {"BENCH_CONCURRENCY": str(c)})
            sidekiq = Variant("sidekiq", shape.format(c), "incr", c, p, lambda o=one: [o] * p)
            out.append(("sidekiq", sidekiq))
        for label, tree, env in sides:
            commands = _conveyor(tree, args.mode, c, env, p)
            out.append(
                (label, Variant("conveyor", shape.format(c), kind, c, p, lambda cmd=commands: cmd))
            )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__)
    parser.add_argument("--against", type=Path, help="another checkout of the repository")
    parser.add_argument("-c", "--concurrency", type=int, action="append")
    parser.add_argument(
        "-p", "--processes", type=int, default=1, help="worker processes (Sidekiq: as many)"
    )
    parser.add_argument("--mode", choices=("threads", "asyncio"), default="threads")
    parser.add_argument("--async-jobs", action="store_true", help="async def jobs on threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--io-jobs", type=int, default=20_000)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for this tree")
    parser.add_argument("--env-against", action="append", default=[], help="NAME=VALUE")
    parser.add_argument("--no-sidekiq", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.concurrency = args.concurrency or [10]
    args.rate = 1000
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-ab-"))
    children = Children(workdir)
    chosen = variants(args)
    runs: dict[int, list[tuple[float, float]]] = {i: [] for i in range(len(chosen))}
    try:
        with terminate_on_sigterm():
            client = start_redis(children, pick_redis_server(None), workdir)
            runner = Runner(children, client, args)
            order = list(range(len(chosen)))
            for round_no in range(args.rounds):
                for i in order if round_no % 2 == 0 else reversed(order):
                    label, v = chosen[i]
                    name = f"{label.replace(' ', '-')}-{v.name}"
                    runs[i].append(
                        runner.io_drain(_peer(v.engine), v.kind, v.commands(), args.io_jobs, name)
                    )
                    rate, cpu = runs[i][-1]
                    print(f"  {label} {v.settings}: {rate:,.0f}/s {cpu:,.0f} µs", file=sys.stderr)
            client.close()
    finally:
        children.close()
        shutil.rmtree(workdir, ignore_errors=True)
    ref: dict[int, tuple[float, float]] = {}
    rows = []
    for i, (label, v) in enumerate(chosen):
        rate = statistics.median(r for r, _ in runs[i])
        cpu = statistics.median(c for _, c in runs[i])
        if label == "sidekiq":
            ref[v.concurrency] = (rate, cpu)
        base = ref.get(v.concurrency)
        ratios = f"{rate / base[0]:.2f} | {cpu / base[1]:.2f}" if base else "n/a | n/a"
        each = ", ".join(f"{r:,.0f}/{c:,.0f}" for r, c in runs[i])
        rows.append(f"| {label} | {v.settings} | {rate:,.0f} | {cpu:,.0f} | {ratios} | {each} |")
    print("| side | settings | drain/s | CPU µs/job | drain ÷ Sidekiq | CPU ÷ Sidekiq | rounds |")
    print("|---|---|---:|---:|---:|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
