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

import logging
import os

log = logging.getLogger("conveyor.worker")

#: Set by the supervisor for each of its children: the child's slot (0 .. N-1).
SLOT_ENV = "CONVEYOR_WORKER_SLOT"


def core_for(allowed: list[int], slot: int | None, current: int | None) -> int:
    """The core a process pins itself to: the ``slot``-th of the ``allowed`` ones (the n-th
    process of a supervisor, spread over the cores), else the one it runs on (a lone process
    stays where the OS put it), else the first.

    >>> core_for([0, 1], 3, None), core_for([2, 5], None, 5), core_for([0, 1], None, None)
    (1, 5, 0)
    """
    if slot is not None:
        return allowed[slot % len(allowed)]
    if current in allowed:
        return current
    return allowed[0]


def running_core() -> int | None:
    """The core this process runs on now (Linux: ``/proc/self/stat``, field 39)."""
    try:
        with open("/proc/self/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None


def pin_to_one_core(slot: int | None = None) -> int | None:
    """Pin this process (and every thread it starts afterwards) to one core; the core, or
    ``None`` where the OS cannot (not Linux). Call it before any thread starts."""
    if not hasattr(os, "sched_setaffinity"):
        log.warning("cpu_affinity=one: this OS cannot pin a process to a core; not pinned")
        return None
    allowed = sorted(os.sched_getaffinity(0))
    core = core_for(allowed, slot, running_core())
    os.sched_setaffinity(0, {core})
    return core


def slot_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The slot the supervisor gave this process, if any."""
    raw = env.get(SLOT_ENV)
    return int(raw) if raw is not None and raw.isdigit() else None
