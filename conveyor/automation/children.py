"""Step processes never outlive their node (issue #16): a node that dies (SIGKILL, OOM, a
power cut of its container) must not leave a task running while reliable fetch hands the same
task to another node.

- Every step runs under a *reaper* (:mod:`conveyor.automation._reaper`), a small parent in the
  step's own session that the kernel signals when the node dies (``PR_SET_PDEATHSIG``); it then
  SIGKILLs the session's process group. The request is made by the reaper itself after it
  started (not in a ``preexec_fn``, which is unsafe in a threaded node), followed by a check
  that the node is still its parent, which closes the race with a node dying in between.
- Every step's environment carries :data:`OWNER_ENV` (the node's pid and start time).
  :func:`sweep_leftovers`, run when a node starts, kills the process groups of steps whose
  owner is gone: leftovers of a crash the reaper could not handle (the reaper itself killed).

Not covered: a process that leaves the step's session *and* clears its environment.

>>> sweep_leftovers()                                          # doctest: +SKIP
[]
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import psutil

log = logging.getLogger("conveyor.automation")

#: ``<pid>:<start time>`` of the node that started a step, in the step's environment.
OWNER_ENV = "CONVEYOR_STEP_OWNER"
REAPER = str(Path(__file__).with_name("_reaper.py"))


def owner_tag(pid: int | None = None) -> str:
    """This process's (or ``pid``'s) identity for :data:`OWNER_ENV`: pid and start time, so a
    reused pid is not taken for the node.

    >>> owner_tag().startswith(str(os.getpid()) + ":")
    True
    """
    process = psutil.Process(pid or os.getpid())
    return f"{process.pid}:{process.create_time():.2f}"


def reaper_argv(argv: list[str]) -> list[str]:
    """``argv`` run under the reaper (isolated mode, no site: it only needs the stdlib)."""
    return [sys.executable, "-I", "-S", REAPER, str(os.getpid()), "--", *argv]


def _owner_alive(tag: str) -> bool:
    pid_text, _, started = tag.partition(":")
    try:
        return owner_tag(int(pid_text)) == f"{int(pid_text)}:{float(started):.2f}"
    except (ValueError, psutil.Error):
        return False


def sweep_leftovers() -> list[int]:
    """Kill the process groups of step processes (this user's) whose node is gone; returns the
    pids found. Called once when a node starts."""
    me = os.getuid()
    found: list[int] = []
    for process in psutil.process_iter(["uids"]):
        with contextlib.suppress(psutil.Error, OSError):
            uids = process.info.get("uids")
            if uids is None or uids.real != me or process.pid == os.getpid():
                continue
            tag = process.environ().get(OWNER_ENV)
            if not tag or _owner_alive(tag):
                continue
            found.append(process.pid)
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(process.pid), signal.SIGKILL)
            process.kill()
    if found:
        log.warning(
            "automation: killed %d step process(es) a crashed node left behind: %s",
            len(found),
            ", ".join(map(str, found)),
        )
    return found
