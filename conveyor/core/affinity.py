"""Pinning a worker process to one CPU core (``Settings.cpu_affinity = "one"``).

Under CPython's GIL the threads of a process run Python code one at a time, but the OS
places them on any core: every hand-off of the GIL between threads on different cores is a
cross-core wake-up, which costs far more than the hand-off itself (on a virtual machine, an
interrupt through the hypervisor). Pinned to one core, a thread that gives the GIL up for a
socket call usually takes it back before another runs, and the hand-offs stay on the core.
Measured on the 2-core development machine (``python -m benchmarks.profile -c 10``, jobs making
one ``INCR``): 13,300 jobs/s at 77 µs of CPU per job, pinned 16,400 at 55 µs
(docs/concurrency-model.md). What a pinned process gives up: C code that releases the GIL
(compression, numpy) no longer runs on several cores at once within it.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Mapping
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


#: The lock files of the cores this process claimed, open for its life (closing one, or the
#: process's death, releases the claim).
_claims: list[IO[str]] = []


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
        _claims.append(handle)
        return core
    return None


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
