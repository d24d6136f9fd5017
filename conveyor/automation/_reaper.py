"""The parent of every step process: it dies with the node and takes the step's processes with
it (issue #16). Run by :mod:`conveyor.automation.runner` as ``python -I -S _reaper.py NODE_PID
-- COMMAND...`` in a session of its own; standard library only, so it starts in milliseconds.

- It asks the kernel for ``SIGUSR1`` when its parent (the node) dies (``PR_SET_PDEATHSIG``
  through ``prctl``), then checks the parent is still ``NODE_PID`` (it may have died before the
  request was made). On that signal it SIGKILLs its whole process group: the step and
  everything it started that stayed in the group.
- Otherwise it starts ``COMMAND`` in its group, waits, and exits as the command did (same
  status, or killed by the same signal), so the runner sees the step's own outcome.
- ``SIGTERM`` (the runner's timeout reaches the whole group) is left to the command: the reaper
  keeps waiting for it, and the runner's ``SIGKILL`` after the grace ends both.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from types import FrameType

PR_SET_PDEATHSIG = 1
DEATH_SIGNAL = signal.SIGUSR1


def _kill_group(signum: int = 0, frame: FrameType | None = None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A handler rather than SIG_IGN: an ignored signal would stay ignored in the command."""


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: _reaper.py NODE_PID -- COMMAND...\n")
        return 2
    node = int(argv[1])
    # The handler first: a death signal arriving before it would kill only the reaper.
    signal.signal(DEATH_SIGNAL, _kill_group)
    signal.signal(signal.SIGTERM, _ignore)
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is None:  # not Linux: the start-up sweep is the only safety net
        sys.stderr.write("conveyor reaper: no prctl here; steps may outlive a dead node\n")
    elif prctl(PR_SET_PDEATHSIG, int(DEATH_SIGNAL), 0, 0, 0) != 0:
        sys.stderr.write(f"conveyor reaper: prctl failed (errno {ctypes.get_errno()})\n")
    if os.getppid() != node:
        _kill_group()  # the node died before the kernel was asked to tell us
    try:
        child = subprocess.Popen(argv[3:])
    except OSError as exc:
        sys.stderr.write(f"cannot start {argv[3]}: {exc}\n")
        return 127
    while True:
        try:
            code = child.wait()
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
