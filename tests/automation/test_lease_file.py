"""The file lease: its files on disk, fences that survive a deleted lease file, and real
processes contending for one lease through Leadership."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import StartProcess, wait_for
from support.automation import race_acquire

from conveyor.automation.lease import FileLease, Leadership, Term, default_lease_path, open_lease
from conveyor.automation.settings import LeaderElection
from conveyor.clock import FakeClock, SystemClock
from conveyor.errors import LeaseError

LONG = 60.0


def test_the_lease_file_is_a_json_record(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    lease = FileLease(tmp_path / "wf.txt", clock=clock)
    term = lease.acquire("node-a", 30)
    assert term == Term("node-a", 1, 1_030.0)
    clock.advance(5)
    assert lease.renew(term, 30) == Term("node-a", 1, 1_035.0)
    assert json.loads((tmp_path / "wf.txt").read_text()) == {
        "holder": "node-a",
        "fence": 1,
        "expires_at": 1_035.0,
        "renewed": 1,
        "released": False,
    }
    assert (tmp_path / "wf.txt.fence").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wf.txt", "wf.txt.fence", "wf.txt.lock"]


def test_fence_survives_a_deleted_or_emptied_lease_file(tmp_path: Path) -> None:
    lease = FileLease(tmp_path / "wf.txt")
    fences = []
    for damage in ("delete", "empty", "garbage", None):
        term = lease.acquire("node-a", LONG)
        assert term is not None
        fences.append(term.fence)
        lease.release(term)
        if damage == "delete":
            (tmp_path / "wf.txt").unlink()
        elif damage == "empty":  # as left by a crash right after the exclusive create
            (tmp_path / "wf.txt").write_bytes(b"")
        elif damage == "garbage":
            (tmp_path / "wf.txt").write_text('{"holder": 3}')
    assert fences == [1, 2, 3, 4]
    # The record alone also carries the high-water mark, if the sidecar is the one lost.
    (tmp_path / "wf.txt.fence").unlink()
    term = lease.acquire("node-b", LONG)
    assert term is not None and term.fence == 5


def test_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted" / "wf.txt"
    with pytest.raises(LeaseError, match="does not exist: mount the shared storage"):
        FileLease(missing)
    with pytest.raises(LeaseError, match="not-mounted"):
        open_lease(LeaderElection(path=str(tmp_path / "not-mounted") + "/"), "wf")
    assert not missing.parent.exists()


def test_open_lease_paths(tmp_path: Path) -> None:
    by_dir = open_lease(LeaderElection(path=f"{tmp_path}/"), "migrate")
    assert by_dir.description == f"file:{tmp_path}/migrate.txt"
    by_file = open_lease(LeaderElection(path=str(tmp_path / "one.lock")), "migrate")
    assert by_file.description == f"file:{tmp_path}/one.lock"
    # path null: the lease every node sharing the Redis sees, not a file on this machine.
    with pytest.raises(LeaseError, match="lives in Redis"):
        open_lease(LeaderElection(), "migrate")
    assert default_lease_path("migrate", "/srv/c") == "/srv/c/leases/migrate.txt"
    with pytest.raises(LeaseError, match=r"workflow name '\.\./x' cannot name a lease"):
        open_lease(LeaderElection(), "../x", state_dir=str(tmp_path))


def test_threads_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    """POSIX locks do not exclude threads of one process; the per-path thread lock does."""
    path = tmp_path / "wf.txt"
    for round_ in range(8):  # the first round creates the file, the others take it over
        handles = [FileLease(path) for _ in range(8)]
        results = race_acquire(handles, LONG)
        winners = [t for t in results if t is not None]
        assert len(winners) == 1 and winners[0].fence == round_ + 1, results
        handles[0].release(winners[0])


class RecordingClock(SystemClock):
    """The real clock, remembering its last monotonic reading: right after ``current()``
    returned a term, that is the exact instant the term was judged valid. CLOCK_MONOTONIC is
    one clock for every process on the machine, so readings of different processes compare."""

    last = 0.0

    def monotonic(self) -> float:
        self.last = time.monotonic()
        return self.last


# A child ticks a Leadership on the shared lease file and records, for every term it believed
# valid, the first and last instants it did (see RecordingClock). In "chaos" mode it sometimes
# resigns and sometimes stalls past its term without ticking (as a paused process would), so
# terms change hands many times. It stops when the stop file appears or after `seconds`.
CHILD = """
import json, os, random, sys, time
from conveyor.automation.lease import FileLease, Leadership
from conveyor.clock import SystemClock
class RecordingClock(SystemClock):  # as in the test module
    last = 0.0
    def monotonic(self):
        self.last = time.monotonic()
        return self.last
path, out, stop, name, mode, seconds = sys.argv[1:7]
clock = RecordingClock()
node = Leadership(FileLease(path), name, term=1.5, margin=0.5, clock=clock)
rng = random.Random(os.getpid())
windows = {}
stall = False
end = time.monotonic() + float(seconds)
while time.monotonic() < end and not os.path.exists(stop):
    node.tick()
    # Mostly asleep here, so a pause mostly ends here: current() is asked before any tick.
    time.sleep(1.8 if stall else rng.uniform(0.002, 0.02))
    stall = False
    before = time.monotonic()
    term = node.current()
    # The reading current() judged by; `before` bounds it should current() not read the clock.
    at = max(before, clock.last)
    if term is not None:
        w = windows.setdefault(term.fence, [term.holder, at, at])
        w[2] = at
        if not os.path.exists(out + ".held"):
            open(out + ".held", "w").close()  # tells the test this node has acted as master
        roll = rng.random() if mode == "chaos" else 1.0
        if roll < 0.04:
            node.resign()
        elif roll < 0.07:
            stall = True  # past the whole term, no tick, then ask current() first
node.resign()
with open(out, "w") as f:
    json.dump([[fence, *w] for fence, w in windows.items()], f)
"""


def _child(
    processes: StartProcess, tmp_path: Path, name: str, mode: str, seconds: float
) -> tuple[subprocess.Popen[bytes], Path]:
    out = tmp_path / f"{name}.json"
    lease_path = tmp_path / "shared" / "wf.txt"
    lease_path.parent.mkdir(exist_ok=True)
    stop = tmp_path / "stop"
    proc = processes("-c", CHILD, str(lease_path), str(out), str(stop), name, mode, str(seconds))
    return proc, out


def test_processes_contending_never_overlap_and_fences_increase(
    tmp_path: Path, processes: StartProcess
) -> None:
    # 8 s: a stall (3 % of a master's loops) leaves no master for about 2 s (past the term
    # and its margin), so 5 s sometimes saw only 3 terms (CI, 2026-12-05).
    children = [_child(processes, tmp_path, f"node-{i}", "chaos", 8) for i in range(4)]
    for proc, _ in children:
        assert proc.wait(60) == 0
    windows = [tuple(w) for _, out in children for w in json.loads(out.read_text())]
    fences = [w[0] for w in windows]
    assert len(fences) == len(set(fences)), "a fence was handed out twice"
    assert len(windows) >= 4 and len({w[1] for w in windows}) >= 2, windows
    ordered = sorted(windows, key=lambda w: w[2])
    for (fence_a, holder_a, _, end_a), (fence_b, holder_b, start_b, _) in itertools.pairwise(
        ordered
    ):
        assert fence_b > fence_a, ordered
        assert end_a < start_b, f"{holder_a} (term {fence_a}) and {holder_b} overlapped"
    last = FileLease(tmp_path / "shared" / "wf.txt").peek()
    assert last is not None and last.fence >= max(fences)


def _stop_outside_a_lease_call(pid: int, lock: Path) -> None:
    """SIGSTOP ``pid`` at a moment it does not hold the lease's file lock: a process frozen
    inside a lease call (a few milliseconds per renewal) would keep everyone else waiting for
    the lock until it resumes (see docs/leader-election.md), which is not what this tests."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "T")
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return  # closing fd below drops this probe lock
        except OSError:
            pass
        finally:
            os.close(fd)
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the child always held the lease lock when stopped")


def test_a_sigstopped_master_does_not_believe_it_is_master_after_sigcont(
    tmp_path: Path, processes: StartProcess
) -> None:
    proc, out = _child(processes, tmp_path, "node-a", "steady", 60)
    lease = FileLease(tmp_path / "shared" / "wf.txt")
    wait_for(lambda: Path(f"{out}.held").exists(), timeout=30)
    held = lease.peek()
    assert held is not None and held.holder == "node-a"
    _stop_outside_a_lease_call(proc.pid, tmp_path / "shared" / "wf.txt.lock")
    clock = RecordingClock()
    b = Leadership(lease, "node-b", term=1.5, margin=0.5, clock=clock)
    wait_for(lambda: b.tick() is not None, timeout=30)  # once node-a's term has expired
    b_first = clock.last
    os.kill(proc.pid, signal.SIGCONT)
    cont = time.monotonic()
    # node-b stays master while node-a runs on for a while.
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        term = b.tick()
        assert term is not None and term.holder == "node-b" and term.fence == 2
        time.sleep(0.02)
    (tmp_path / "stop").touch()
    assert proc.wait(30) == 0
    b.resign()
    windows = json.loads(out.read_text())
    assert [w[:2] for w in windows] == [[1, "node-a"]]  # node-a never held another term
    last_belief = windows[0][3]
    assert last_belief < b_first and last_belief < cont
