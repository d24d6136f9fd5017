"""Pinning worker processes to a core (conveyor/core/affinity.py): ``conveyor worker -p 2
--cpu-affinity one`` runs each child on one core of its own, workers started separately take
free cores before sharing one, and jobs run; by default (``auto``) a threads-mode worker runs
on one core, moves off a core another process keeps busy, is unpinned while every core is
busy, and gives its children every core back. Real processes, real CPU burners pinned with
``sched_setaffinity``, and a real Redis."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psutil
import pytest
from support import PYTHON, ROOT, python_env, stop_session, wait_for

from conveyor import App, Settings
from conveyor.api import Api
from conveyor.core.affinity import BACKOFF, Loads, Move, Steering, decide, release, steer

pytestmark = pytest.mark.slow

ALLOWED = sorted(os.sched_getaffinity(0))


@contextmanager
def worker(
    settings: Settings, state: Path, *args: str, app: str = "apps.basic", **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [PYTHON, "-m", "conveyor.cli", "worker", "-r", app, "-c", "2", *args],
        env=python_env(
            CONVEYOR_REDIS_URL=str(settings.redis_url),
            CONVEYOR_KEY_PREFIX=settings.key_prefix,
            CONVEYOR_STATE_DIR=str(state),
            **env,
        ),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        stop_session(proc)


def affinities(settings: Settings, pids: list[int]) -> list[list[int]]:
    """Once every worker registered and 20 jobs ran: each process's cores."""
    with Api.from_settings(settings) as api:
        wait_for(lambda: len(api.processes.list()) == len(pids), timeout=30)
        app = App(settings)
        app.client.enqueue_bulk("tick", [[i] for i in range(20)])
        app.close()
        wait_for(lambda: api.stats().processed >= 20, timeout=30)
    return sorted(sorted(psutil.Process(pid).cpu_affinity()) for pid in pids)


def test_each_process_of_a_supervisor_runs_on_a_core_of_its_own_only_when_asked(
    settings: Settings, tmp_path: Path
) -> None:
    with worker(settings, tmp_path, "-p", "2", "--cpu-affinity", "none") as proc:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2, timeout=30)
        pids = [c.pid for c in psutil.Process(proc.pid).children()]
        assert affinities(settings, pids) == [ALLOWED, ALLOWED], "the OS places them"
    with worker(settings, tmp_path, "-p", "2", "--cpu-affinity", "one") as proc:
        wait_for(lambda: len(psutil.Process(proc.pid).children()) == 2, timeout=30)
        pinned = affinities(settings, [c.pid for c in psutil.Process(proc.pid).children()])
    assert all(len(cores) == 1 for cores in pinned), pinned
    if len(ALLOWED) > 1:
        assert pinned[0] != pinned[1], "the two processes share no core"


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
def test_workers_started_separately_take_free_cores_before_sharing_one(
    settings: Settings, tmp_path: Path
) -> None:
    # As the first processes of two separate `-p N` commands, both would pick the first core:
    # the claim of that core by one sends the other to another core.
    with ExitStack() as stack:
        procs = [
            stack.enter_context(
                worker(settings, tmp_path, "--cpu-affinity", "one", CONVEYOR_WORKER_SLOT="0")
            )
            for _ in range(2)
        ]
        pinned = affinities(settings, [p.pid for p in procs])
    assert all(len(cores) == 1 for cores in pinned) and pinned[0] != pinned[1], pinned


def cores_of(pid: int) -> list[list[int]]:
    """The cores each thread of ``pid`` may use, deduplicated."""
    found: set[tuple[int, ...]] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add(tuple(sorted(os.sched_getaffinity(int(tid)))))
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(list(cores) for cores in found)


@contextmanager
def burners(*cores: int) -> Iterator[None]:
    """A process spinning on each of ``cores``, pinned to it."""
    code = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass"
    procs = [subprocess.Popen([PYTHON, "-c", code, str(core)]) for core in cores]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def running(settings: Settings, proc: subprocess.Popen[bytes]) -> int:
    """Once the worker registered: the one core all its threads run on."""
    with Api.from_settings(settings) as api:
        wait_for(lambda: len(api.processes.list()) == 1, timeout=30)
    cores = cores_of(proc.pid)
    assert len(cores) == 1 and len(cores[0]) == 1, f"one core for every thread: {cores}"
    return cores[0][0]


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
def test_by_default_a_threads_worker_moves_off_a_core_another_process_keeps_busy(
    settings: Settings, tmp_path: Path
) -> None:
    with worker(settings, tmp_path) as proc:
        core = running(settings, proc)
        with burners(core):
            wait_for(lambda: cores_of(proc.pid) != [[core]], timeout=20)
            moved = cores_of(proc.pid)
        assert len(moved) == 1 and len(moved[0]) == 1 and moved[0] != [core], moved
        app = App(settings)
        app.client.enqueue("tick", [1])
        app.close()
        with Api.from_settings(settings) as api:
            wait_for(lambda: api.stats().processed >= 1, timeout=30)


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
def test_by_default_a_threads_worker_is_unpinned_while_every_core_is_busy(
    settings: Settings, tmp_path: Path
) -> None:
    with worker(settings, tmp_path) as proc:
        running(settings, proc)
        with burners(*ALLOWED):
            wait_for(lambda: cores_of(proc.pid) == [ALLOWED], timeout=20)


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
def test_a_pinned_worker_s_child_processes_get_every_core_back(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "child-cores"
    with worker(settings, tmp_path, app="apps.affinity_app") as proc:
        running(settings, proc)
        app = App(settings)
        app.client.enqueue("spawn", [str(out), 1.5])
        app.close()
        wait_for(out.exists, timeout=30)
    assert sorted(int(c) for c in out.read_text().split()) == ALLOWED


@pytest.mark.parametrize(
    ("app", "args"), [("apps.aio_basic", ()), ("apps.basic", ("--cpu-affinity", "none"))]
)
def test_asyncio_workers_and_cpu_affinity_none_are_not_pinned(
    settings: Settings, tmp_path: Path, app: str, args: tuple[str, ...]
) -> None:
    with worker(settings, tmp_path, *args, app=app) as proc:
        with Api.from_settings(settings) as api:
            wait_for(lambda: len(api.processes.list()) == 1, timeout=30)
        assert cores_of(proc.pid) == [ALLOWED]


# -- the steering's decisions, on given loads ----------------------------------------------


def to(move: Move | None) -> int | str | None:
    """Where a decision sends the process: a core, ``None`` (unpinned) or ``"stay"``."""
    return "stay" if move is None else move.core


def test_a_crowded_core_is_left_for_the_least_loaded_free_one_only() -> None:
    crowded = Loads(own=0.4, cores={0: 1.0, 1: 0.4, 2: 0.2})
    assert to(decide(0, crowded)) == 2
    assert to(decide(0, crowded, taken=[2])) == 1
    assert to(decide(0, crowded, taken=[1, 2])) is None  # starved, nowhere to go: unpinned
    assert to(decide(0, Loads(own=0.6, cores={0: 1.0, 1: 1.0}))) == "stay"  # others: 0.4 only
    assert to(decide(0, Loads(own=0.8, cores={0: 0.95, 1: 0.0}))) == "stay"  # its own load
    assert to(decide(0, Loads(own=0.1, cores={0: 0.3, 1: 0.25}))) == "stay"  # none better


def test_an_unpinned_process_pins_again_only_with_a_core_s_worth_of_room() -> None:
    assert to(decide(None, Loads(own=1.0, cores={0: 1.0, 1: 0.9}))) == "stay"  # 0.9 by others
    assert to(decide(None, Loads(own=1.0, cores={0: 0.9, 1: 0.6}))) == 1
    assert to(decide(None, Loads(own=1.0, cores={0: 0.9, 1: 0.6}), taken=[0, 1])) == "stay"


class Fake:
    """The clock, this process's CPU and the cores' busy time the steering reads."""

    def __init__(self) -> None:
        self.now, self.own, self.busy = 0.0, 0.0, {0: 0.0, 1: 0.0}

    def advance(self, own: float, **cores: float) -> tuple[float, float, dict[int, float]]:
        self.now += 1.0
        self.own += own
        self.busy = {c: self.busy[c] + cores.get(f"c{c}", 0.0) for c in self.busy}
        return (self.now, self.own, dict(self.busy))


def test_the_steering_moves_only_after_the_crowding_held_two_spans_and_backs_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves: list[tuple[set[int], set[int] | None]] = []

    def repin(tids: object, cores: set[int], only_from: set[int] | None = None) -> int:
        moves.append((cores, only_from))
        return 0

    monkeypatch.setattr("conveyor.core.affinity.repin", repin)
    monkeypatch.setattr("conveyor.core.affinity.descendants", lambda pid="self": [])
    fake = Fake()
    steering = Steering(0, {0, 1}, tmp_path / "cpu")
    looked: list[int] = []
    taken = steering.taken

    def counted() -> list[int]:
        looked.append(1)
        return taken()

    monkeypatch.setattr(steering, "taken", counted)
    quiet = fake.advance(0.3, c0=0.35, c1=0.1)
    steering.step(quiet, (0.0, 0.0, {0: 0.0, 1: 0.0}))
    assert steering.core == 0 and not looked, "a quiet span reads no other worker's claim"
    last = quiet
    for step, (own, c0, c1) in enumerate([(0.3, 1.0, 0.1), (0.3, 0.3, 0.1), (0.3, 1.0, 0.1)]):
        now = fake.advance(own, c0=c0, c1=c1)
        steering.step(now, last)
        last = now
        assert steering.core == 0, f"a burst of one span does not move it (span {step})"
    now = fake.advance(0.3, c0=1.0, c1=0.1)
    steering.step(now, last)
    assert steering.core == 1 and moves == [({1}, {0})]
    # Both cores full: unpinned, and pinned again only after the back-off.
    steering.clock = lambda: fake.now
    for _ in range(2):
        last, now = now, fake.advance(0.3, c0=1.0, c1=1.0)
        steering.step(now, last)
    assert steering.core is None and moves[-1] == ({0, 1}, {1})
    for _ in range(int(BACKOFF) - 1):
        last, now = now, fake.advance(0.3, c0=0.3, c1=0.0)
        steering.step(now, last)
        assert steering.core is None, "room again, but within the back-off"
    for _ in range(3):
        last, now = now, fake.advance(0.3, c0=0.3, c1=0.0)
        steering.step(now, last)
    assert steering.core == 1, "pinned again to the least loaded core"
    release(1)


def test_auto_pins_nothing_and_steers_nothing_where_the_core_claims_cannot_be_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    with caplog.at_level("WARNING", logger="conveyor.worker"):
        assert steer(blocked / "cpu") is None
    assert os.sched_getaffinity(0) == set(ALLOWED)
    said = [r.getMessage() for r in caplog.records if "core claims" in r.getMessage()]
    assert len(said) == 1 and str(blocked / "cpu") in said[0] and "not pinned" in said[0], said
