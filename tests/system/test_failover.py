"""A primary failover under load (issue #18): one primary, one replica, three Sentinels, three
worker processes on the ``redis+sentinel://`` URL and a producer enqueuing 5,000 jobs faster
than the workers drain them. The primary is SIGKILLed mid-drain; Sentinel promotes the
replica; the killed node comes back (as systemd would restart it) and the Sentinels make it
the new replica.

Replication to a replica on the same machine takes well under a millisecond, so a bare kill
loses almost nothing and could not tell a durable enqueue from a plain one. The replica
therefore falls behind first, as it does after a network hiccup: its link is cut and it is
stopped for ``LAG`` seconds, during which the primary still accepts writes, then the primary
dies and the replica resumes.

With ``min_replicas=1`` every enqueue that returned success must run, and the workers finish
without a restart. Without it, the accepted jobs the kill lost are counted and printed, not
asserted: that window is what docs/scaling.md documents.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import APPS, StartProcess, wait_for
from support.sentinel import Cluster, sentinel_cluster

from conveyor import App, Job, Settings
from conveyor.errors import NotDurableError

TOTAL = 5_000
KILL_AFTER = 1_500
WORKERS = 3
LAG = 0.5


@dataclass
class Produced:
    accepted: set[int] = field(default_factory=set)
    unconfirmed: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def produce(url: str, min_replicas: int, out: Produced, stop: threading.Event) -> None:
    """Enqueue ``TOTAL`` accepted jobs, alternating single enqueues and bulks of 20."""
    app = App(Settings(redis_url=url, min_replicas=min_replicas, min_replicas_timeout=0.5))

    class Tally(Job):
        def perform(self, seq: int) -> None: ...

    app.register(Tally)
    seq = 0
    try:
        while out.count() < TOTAL and not stop.is_set():
            batch = [seq] if seq % 2 == 0 else list(range(seq, seq + 20))
            seq += len(batch)
            try:
                if len(batch) == 1:
                    Tally.perform_async(batch[0])
                else:
                    Tally.bulk_perform_async([[s] for s in batch])
            except NotDurableError:
                with out.lock:  # written, maybe lost: not counted as accepted
                    out.unconfirmed.update(batch)
                continue
            with out.lock:
                out.accepted.update(batch)
            time.sleep(0.01)
    except Exception as exc:  # any other failure fails the test below
        out.errors.append(repr(exc))
    finally:
        app.close()


def read_runs(runs: Path) -> dict[int, list[tuple[int, float, int]]]:
    """``pid -> [(seq, time, port)]`` from the workers' files."""
    out: dict[int, list[tuple[int, float, int]]] = {}
    for path in runs.glob("*.log"):
        rows = []
        for line in path.read_text().splitlines():
            seq, at, port = line.split()
            rows.append((int(seq), float(at), int(port)))
        out[int(path.stem)] = rows
    return out


def ran(runs: Path) -> set[int]:
    return {seq for rows in read_runs(runs).values() for seq, _, _ in rows}


def stranded(cluster: Cluster, port: int) -> int:
    """Jobs sitting in working lists (reported when a run misses jobs, see #14)."""
    node = cluster.node(port)
    try:
        return sum(node.llen(key) for key in node.scan_iter("conveyor:working:*"))
    finally:
        node.close()


def failover_run(tmp_path: Path, processes: StartProcess, min_replicas: int) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    with sentinel_cluster(tmp_path / "cluster") as cluster:
        url = cluster.url()
        workers = [
            processes(
                str(APPS / "failover_app.py"),
                CONVEYOR_REDIS_URL=url,
                CONVEYOR_CONCURRENCY="5",
                FAILOVER_RUNS=str(runs),
            )
            for _ in range(WORKERS)
        ]
        out, stop = Produced(), threading.Event()
        producer = threading.Thread(target=produce, args=(url, min_replicas, out, stop))
        started = time.monotonic()
        producer.start()
        try:
            wait_for(lambda: out.count() >= KILL_AFTER and len(ran(runs)) > 500, timeout=60)
            old = cluster.primary_port()
            replica = cluster.nodes[cluster.first_replica]
            primary = cluster.node(old)
            replica.send_signal(signal.SIGSTOP)
            primary.client_kill_filter(_type="replica")  # what was sent is all it will get
            time.sleep(LAG)
            backlog = primary.llen("queue:default")
            primary.close()
            killed_at = cluster.kill(old)
            replica.send_signal(signal.SIGCONT)
            new = cluster.wait_promoted(old)
            promoted_after = time.time() - killed_at
            cluster.start_node(old)  # back, empty; the Sentinels make it a replica of `new`
            producer.join(60)
            assert not producer.is_alive(), "the producer did not finish"
        finally:
            stop.set()
            producer.join(10)
        assert not out.errors, out.errors

        accepted = out.accepted
        if min_replicas:
            # On a timeout the assertion below says how many never ran.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: accepted <= ran(runs), timeout=45, interval=0.2)
        else:
            # Lost jobs never come: wait for the queue to empty and the runs to stop growing.
            node = cluster.node(new)
            wait_for(lambda: node.llen("queue:default") == 0, timeout=45, interval=0.2)
            node.close()
            seen = -1
            while seen != len(ran(runs)):
                seen = len(ran(runs))
                time.sleep(2)
        elapsed = time.monotonic() - started

        rows = read_runs(runs)
        done = ran(runs)
        lost = accepted - done
        on_new = [at for pid_rows in rows.values() for _, at, port in pid_rows if port == new]
        first_on_new = min(on_new) - killed_at
        runs_total = sum(len(r) for r in rows.values())
        print(
            f"\nfailover (min_replicas={min_replicas}): {len(accepted)} accepted, "
            f"{len(out.unconfirmed)} unconfirmed (NotDurableError), {runs_total} runs "
            f"({runs_total - len(done)} duplicates), {len(lost)} accepted jobs lost, "
            f"{stranded(cluster, new)} left in working lists, {backlog} queued at the kill; "
            f"replica promoted "
            f"{promoted_after:.1f}s after the kill, first job on the new primary "
            f"{first_on_new:.1f}s after it; {elapsed:.0f}s in all"
        )
        if min_replicas:
            assert not lost, (
                f"{len(lost)} durably accepted jobs never ran, e.g. {sorted(lost)[:5]}; "
                f"{stranded(cluster, new)} jobs sit in live workers' working lists"
            )

        # The same worker processes carried on: each ran jobs on the new primary, and each
        # stops cleanly.
        for proc in workers:
            assert proc.poll() is None, f"worker {proc.pid} exited ({proc.returncode})"
            assert any(port == new for _, _, port in rows.get(proc.pid, [])), proc.pid
        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        assert [proc.wait(30) for proc in workers] == [0] * WORKERS


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_durably_accepted_job_runs_across_a_failover(
    tmp_path: Path, processes: StartProcess
) -> None:
    failover_run(tmp_path, processes, min_replicas=1)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_accepted_jobs_lost_in_a_failover_without_min_replicas(
    tmp_path: Path, processes: StartProcess
) -> None:
    failover_run(tmp_path, processes, min_replicas=0)
