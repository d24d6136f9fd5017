"""Pinning a worker process to one CPU core (``Settings.cpu_affinity``: ``auto``, ``one``).

Under CPython's GIL the threads of a process run Python code one at a time, but the OS
places them on any core: every hand-off of the GIL between threads on different cores is a
cross-core wake-up, which costs far more than the hand-off itself (on a virtual machine, an
interrupt through the hypervisor). Pinned to one core, a thread that gives the GIL up for a
socket call usually takes it back before another runs, and the hand-offs stay on the core.
Measured on the 2-core development machine (``python -m benchmarks.profile -c 10``, jobs making
one ``INCR``): 13,300 jobs/s at 77 µs of CPU per job, pinned 16,400 at 55 µs
(docs/concurrency-model.md). What a pinned process gives up: C code that releases the GIL
(compression, numpy) no longer runs on several cores at once within it.

``auto`` (the default for a threads-mode worker) pins too, and then steers (:class:`Steering`,
one daemon thread, a look every half second): it moves the process to another core when other
processes keep its core busy, lets the OS place it again when every core is busy, and gives the
process's children (a job's ``subprocess.run``) all its cores back, which they would otherwise
inherit pinned.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("conveyor.worker")

#: Set by the supervisor for each of its children: the child's slot (0 .. N-1).
SLOT_ENV = "CONVEYOR_WORKER_SLOT"


def preference(allowed: list[int], slot: int | None, current: int | None) -> list[int]:
    """The ``allowed`` cores in the order a process tries them: the ``slot``-th first (the
    n-th process of a supervisor, spread over the cores), else the one it runs on (a lone
    process stays where the OS put it), then the ones after it, wrapping around.

    >>> preference([0, 1, 2], 4, None), preference([2, 5], None, 5), preference([0, 1], None, 7)
    ([1, 2, 0], [5, 2], [0, 1])
    """
    if slot is not None:
        start = slot % len(allowed)
    elif current in allowed:
        start = allowed.index(current)
    else:
        start = 0
    return allowed[start:] + allowed[:start]


def running_core() -> int | None:
    """The core this process runs on now (Linux: ``/proc/self/stat``, field 39)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None


#: The lock files of the cores this process claimed, by core, open while it holds the claim
#: (closing one, or the process's death, releases it).
_claims: dict[int, IO[str]] = {}


def claim(cores: list[int], lock_dir: Path) -> int | None:
    """The first of ``cores`` no other pinned worker on this host holds: each core has a lock
    file in ``lock_dir``, locked (``flock``) by the process pinned to it for its life, so
    workers started separately (several commands, a restarted child) take free cores before
    they share one. ``None`` when every core is held or the locks cannot be taken."""
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("cpu_affinity=one: cannot use %s for core claims (%s)", lock_dir, exc)
        return None
    for core in cores:
        handle = open(lock_dir / f"cpu-{core}.lock", "a+", encoding="ascii")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _claims[core] = handle
        return core
    return None


def release(core: int) -> None:
    """Give up this process's claim of ``core`` (nothing if it holds none)."""
    handle = _claims.pop(core, None)
    if handle is not None:
        handle.close()


def pin_to_one_core(lock_dir: Path, slot: int | None = None) -> int | None:
    """Pin this process (and every thread it starts afterwards) to one core: a free one in
    the order of :func:`preference`, else (every core held) its first choice; the core, or
    ``None`` where the OS cannot pin (not Linux). Call it before any thread starts."""
    if not hasattr(os, "sched_setaffinity"):
        log.warning("cpu_affinity=one: this OS cannot pin a process to a core; not pinned")
        return None
    cores = preference(sorted(os.sched_getaffinity(0)), slot, running_core())
    core = claim(cores, lock_dir)
    if core is None:
        core = cores[0]
        log.warning("cpu_affinity=one: every core is held by a pinned worker; sharing %d", core)
    os.sched_setaffinity(0, {core})
    return core


def slot_from_env(env: Mapping[str, str] = os.environ) -> int | None:
    """The slot the supervisor gave this process, if any."""
    raw = env.get(SLOT_ENV)
    return int(raw) if raw is not None and raw.isdigit() else None


# -- auto: pinned, and steered -------------------------------------------------------------

#: How often the steering thread looks (s): the most a child runs pinned before it gets the
#: process's cores back.
TICK = 0.5
#: The span each decision looks back over (s), and how many spans in a row a condition must
#: hold before the process moves: a burst of another process does not move it.
SPAN = 1.0
HOLD = 2
#: Other processes using this share of the process's core make it look for a better one.
CROWDED = 0.25
#: A core is better when its load is below the crowding on this one by this margin.
MARGIN = 0.15
#: The process's core is full at this load (its own and others'): with others using at least
#: ``STARVED`` of it and no better core, the process is unpinned (pinned, it could never have
#: more than what they leave it), and tries a core again after ``BACKOFF`` s (doubling, up to
#: ``BACKOFF_MAX``) once the other processes leave room for it. Less crowded, it stays: on a
#: full machine the OS would give it little more, and its threads would hand the GIL across
#: cores again.
FULL = 0.9
STARVED = 0.5
BACKOFF = 30.0
BACKOFF_MAX = 300.0


def core_busy(stat: str | None = None) -> dict[int, float]:
    """Seconds each core has been busy since boot (``/proc/stat``: every state but idle and
    iowait; steal counts as busy, since the hypervisor gave that time to someone else).

    >>> core_busy("cpu  9 9 9 9\\ncpu0 100 0 50 900 10 0 0 50\\ncpu1 1 0 0 5\\n")
    {0: 2.0, 1: 0.01}
    """
    if stat is None:
        with open("/proc/stat", encoding="ascii") as handle:
            stat = handle.read()
    hz = os.sysconf("SC_CLK_TCK")
    busy: dict[int, float] = {}
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in rest.split()]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        busy[int(name[3:])] = (sum(ticks[:8]) - idle) / hz
    return busy


@dataclass(frozen=True)
class Loads:
    """What one span showed, as shares of one core: this process's CPU (``own``) and each
    core's load, this process's included."""

    own: float
    cores: Mapping[int, float]


@dataclass(frozen=True)
class Move:
    """What the steering decides: ``core`` to pin to, or ``None`` to let the OS place the
    process; ``why`` goes to the log."""

    core: int | None
    why: str


def decide(pinned: int | None, loads: Loads, taken: Iterable[int] = ()) -> Move | None:
    """Where a process pinned to ``pinned`` (``None``: not pinned) should go after a span
    that showed ``loads``; ``taken``: cores other pinned workers hold. ``None``: stay.

    A pinned process moves to the least loaded free core when other processes use at least
    ``CROWDED`` of its own core and that core's load is lower by ``MARGIN``; with no such core,
    its core full and others using at least ``STARVED`` of it, it is unpinned. An unpinned
    process pins again to the least loaded core once the others leave at least a core's worth
    of room besides its own use.

    >>> decide(0, Loads(own=0.5, cores={0: 1.0, 1: 0.1})).core       # crowded: move
    1
    >>> decide(0, Loads(own=0.6, cores={0: 0.8, 1: 0.9})) is None     # no better core
    True
    >>> decide(0, Loads(own=0.4, cores={0: 1.0, 1: 0.95})).core is None   # all full
    True
    >>> decide(0, Loads(own=0.6, cores={0: 1.0, 1: 0.95})) is None   # full, but not starved
    True
    >>> decide(None, Loads(own=0.6, cores={0: 0.5, 1: 0.3})).core    # room again
    1
    """
    free = {c: load for c, load in loads.cores.items() if c not in taken or c == pinned}
    if pinned is None:
        others = sum(loads.cores.values()) - loads.own
        if free and others <= len(loads.cores) - 1 - CROWDED:
            core = min(free, key=lambda c: (free[c], c))
            return Move(core, f"other processes use {others:.2f} of {len(loads.cores)} cores")
        return None
    here = loads.cores.get(pinned, 0.0)
    crowding = max(0.0, here - loads.own)
    if crowding < CROWDED:
        return None
    better = {c: load for c, load in free.items() if c != pinned and load + MARGIN < crowding}
    if better:
        core = min(better, key=lambda c: (better[c], c))
        return Move(
            core,
            f"other processes used {crowding:.2f} of core {pinned}, "
            f"core {core} was {better[core]:.2f} busy",
        )
    if here >= FULL and crowding >= STARVED:
        return Move(None, f"core {pinned} was full ({here:.2f}, {crowding:.2f} by others)")
    return None


def tasks(pid: int | str = "self") -> list[int]:
    """The threads of process ``pid`` (none once it is gone)."""
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return []


def children(pid: int | str = "self") -> list[int]:
    """The child processes of ``pid`` (Linux: each thread's ``children`` file)."""
    found: list[int] = []
    for tid in tasks(pid):
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as handle:
                found += [int(c) for c in handle.read().split()]
        except (OSError, ValueError):
            continue
    return found


def descendants(pid: int | str = "self") -> list[int]:
    """Children, their children, and so on, of ``pid``."""
    found, todo = [], children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children(child)
    return found


def repin(tids: Iterable[int], cores: set[int], only_from: set[int] | None = None) -> int:
    """Give each thread of ``tids`` the ``cores``; with ``only_from``, only those pinned to
    exactly that set (a thread that set its own affinity keeps it). How many changed."""
    changed = 0
    for tid in tids:
        try:
            if only_from is not None and os.sched_getaffinity(tid) != only_from:
                continue
            os.sched_setaffinity(tid, cores)
            changed += 1
        except OSError:  # gone, or not ours to change
            continue
    return changed


class Steering(threading.Thread):
    """``cpu_affinity=auto``: keeps a pinned process on a core other processes leave free,
    and its children unpinned. Start it once the process is pinned to ``core``.

    >>> Steering(core, allowed, lock_dir).start()          # doctest: +SKIP
    """

    def __init__(
        self,
        core: int | None,
        allowed: set[int],
        lock_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
        busy: Callable[[], dict[int, float]] = core_busy,
    ) -> None:
        super().__init__(name="conveyor-affinity", daemon=True)
        self.core: int | None = core
        self.allowed = allowed
        self.lock_dir = lock_dir
        self.clock, self.cpu, self.busy = clock, cpu, busy
        self.stopping = threading.Event()
        self.widened: set[int] = set()  # descendants already given the cores back
        self.streak: list[Move] = []
        self.backoff = BACKOFF
        self.unpinned_at = self.pinned_at = -BACKOFF_MAX

    def run(self) -> None:
        last = (self.clock(), self.cpu(), self.busy())
        while not self.stopping.wait(TICK):
            try:
                self.free_children()
                now = (self.clock(), self.cpu(), self.busy())
                if now[0] - last[0] >= SPAN:
                    self.step(now, last)
                    last = now
            except Exception:  # steering is an optimisation: never a crash
                log.exception("cpu_affinity=auto: steering failed; the process stays where it is")
                return

    def step(
        self,
        now: tuple[float, float, dict[int, float]],
        last: tuple[float, float, dict[int, float]],
    ) -> None:
        span = now[0] - last[0]
        loads = Loads(
            own=(now[1] - last[1]) / span,
            cores={
                c: (now[2][c] - last[2].get(c, 0.0)) / span for c in self.allowed & now[2].keys()
            },
        )
        if self.core is None and now[0] - self.unpinned_at < self.backoff:
            return
        # Other workers' cores can only rule moves out: they are read (a lock file per core)
        # only when the loads alone would move the process.
        move = decide(self.core, loads)
        if move is not None:
            move = decide(self.core, loads, self.taken())
        self.streak = [*self.streak, move][-HOLD:] if move is not None else []
        if move is None or len(self.streak) < HOLD:
            return
        if any(m.core != move.core for m in self.streak):
            return
        self.streak = []
        self.go(move)

    def taken(self) -> list[int]:
        """Cores other pinned workers on this host hold (their lock files are locked)."""
        held = []
        for core in self.allowed - ({self.core} if self.core is not None else set()):
            mine = claim([core], self.lock_dir)
            if mine is None:
                held.append(core)
            else:
                release(mine)
        return held

    def go(self, move: Move) -> None:
        old = {self.core} if self.core is not None else set(self.allowed)
        if move.core is not None and claim([move.core], self.lock_dir) is None:
            return  # another worker took it meanwhile
        if self.core is not None:
            self.free_children()  # pinned to the old core: widened before the move
            release(self.core)
        target = {move.core} if move.core is not None else set(self.allowed)
        repin(tasks(), target, only_from=old)
        now = self.clock()
        if move.core is None:  # unpinned again soon after pinning again: wait longer
            recent = now - self.pinned_at < BACKOFF_MAX
            self.backoff = min(self.backoff * 2, BACKOFF_MAX) if recent else BACKOFF
            self.unpinned_at = now
            log.info("cpu_affinity=auto: unpinned from core %s: %s", self.core, move.why)
        else:
            if self.core is None:
                self.pinned_at = now
            log.info("cpu_affinity=auto: pinned to core %d: %s", move.core, move.why)
        self.core = move.core

    def free_children(self) -> None:
        """Give each new descendant process the process's cores back: a child inherits the
        pin of the thread that started it, and a job's ``subprocess.run`` should not run on
        one core because the worker does."""
        if self.core is None:  # children inherit every core
            self.widened.clear()
            return
        current = descendants()
        for pid in current:
            if pid in self.widened:
                continue
            self.widened.add(pid)
            repin(tasks(pid), set(self.allowed), only_from={self.core})
        self.widened &= set(current)


def steer(lock_dir: Path, slot: int | None = None) -> Steering | None:
    """``cpu_affinity=auto``: pin this process to a free core (as :func:`pin_to_one_core`; not
    pinned while every core is held by another pinned worker) and start its
    :class:`Steering`. ``None`` where there is nothing to steer: one core, or not Linux. Call
    it before any other thread starts."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    if not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children"):
        # A kernel without CONFIG_PROC_CHILDREN: the children of a job could not be given
        # their cores back, so the process is not pinned at all.
        log.info("cpu_affinity=auto: no /proc/<pid>/task/<tid>/children here; not pinned")
        return None
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the steering could not see other workers' cores: no pin
        log.warning(
            "cpu_affinity=auto: cannot use %s for core claims (%s); not pinned", lock_dir, exc
        )
        return None
    core = claim(preference(sorted(allowed), slot, running_core()), lock_dir)
    if core is not None:
        try:
            os.sched_setaffinity(0, {core})
        except OSError as exc:  # a sandbox that forbids it
            log.info("cpu_affinity=auto: cannot pin (%s); not pinned", exc)
            release(core)
            return None
    steering = Steering(core, set(allowed), lock_dir)
    steering.start()
    return steering
