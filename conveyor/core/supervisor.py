"""Several worker processes from one command (``conveyor worker --processes N``).

The supervisor starts N children (each the same CLI command with ``--processes 1``), forwards
TERM/INT (graceful stop) and TSTP (quiet) to them, restarts a child that dies unexpectedly with
exponential backoff, and exits once every child has exited after a stop. A child that exits
with status 0 on its own stopped on purpose (burst mode finished, or ``conveyor processes stop``)
and is not restarted. Children past the stop deadline are killed; their jobs stay in their
working lists and are recovered by the surviving processes (SPEC CORE-3). Secrets reach the
children through ``env``, never their command line: an argument holding a URL password is
refused.

>>> Supervisor(["conveyor", "worker", "-r", "app", "-p", "1"], 4).run()   # doctest: +SKIP
0
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from conveyor.core.affinity import SLOT_ENV
from conveyor.errors import ConfigurationError
from conveyor.redis_url import has_credentials, mask_url

log = logging.getLogger("conveyor.supervisor")

TICK = 0.1


@dataclass
class Child:
    """One worker slot: its current process, when it started, and its restart state."""

    slot: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    finished: bool = False

    @property
    def pid(self) -> int | None:
        """PID of the running process of this slot, if any."""
        return None if self.proc is None else self.proc.pid


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``base * 2**(failures-1)`` capped at ``cap``; a child that ran at least
    ``stable_after`` seconds counts as healthy again."""

    base: float = 0.5
    cap: float = 30.0
    stable_after: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before restart number ``failures``.

        >>> Backoff().delay(3)
        2.0
        """
        return min(self.cap, self.base * float(2 ** max(0, failures - 1)))


class Supervisor:
    """Runs ``processes`` copies of ``argv`` until told to stop.

    >>> sup = Supervisor(["python", "-m", "conveyor.cli", "worker", "-r", "app"], 2)
    >>> sup.run()                                      # doctest: +SKIP
    """

    def __init__(
        self,
        argv: Sequence[str],
        processes: int,
        *,
        stop_timeout: float = 35.0,
        backoff: Backoff | None = None,
        env: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        for arg in argv:
            if has_credentials(arg):
                # Every local user can read a command line (ps, /proc/<pid>/cmdline).
                raise ConfigurationError(
                    f"child argument {mask_url(arg)!r} holds a password; hand it to the "
                    "children through env= (e.g. CONVEYOR_REDIS_URL) instead"
                )
        self.argv = list(argv)
        self.children = [Child(slot) for slot in range(processes)]
        self.stop_timeout = stop_timeout
        self.backoff = backoff or Backoff()
        self.env = dict(env) if env is not None else None
        self.monotonic = monotonic
        self.stopping = False
        self.deadline: float | None = None
        self.killed = 0
        self._pending: list[int] = []

    # -- public ---------------------------------------------------------------------------------
    def run(self) -> int:
        """Start the children and supervise them until all have exited; returns the exit status
        (0, or 1 when children had to be killed at the stop deadline)."""
        previous = self._install_signals()
        try:
            for child in self.children:
                self._spawn(child)
            while not self.done():
                self.tick()
                time.sleep(TICK)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._kill_all()
        return 1 if self.killed else 0

    def request(self, signum: int) -> None:
        """Queue a signal for the next :meth:`tick` (what the signal handlers call)."""
        self._pending.append(signum)

    def tick(self) -> None:
        """One supervision step: handle signals, reap exited children, restart, enforce the
        stop deadline."""
        pending, self._pending = self._pending, []
        for signum in pending:
            self._handle(signum)
        now = self.monotonic()
        for child in self.children:
            self._reap(child, now)
            if not self.stopping and child.restart_at is not None and now >= child.restart_at:
                self._spawn(child)
        if self.stopping and self.deadline is not None and now >= self.deadline:
            self._kill_all()

    def done(self) -> bool:
        """True once every slot has exited for good (stopped, or exited 0 on its own)."""
        return all(c.finished and c.proc is None for c in self.children)

    def pids(self) -> list[int]:
        """PIDs of the children running now. Example: ``os.kill(sup.pids()[0], 0)``."""
        return [c.pid for c in self.children if c.pid is not None]

    # -- internals ------------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any]:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.request(signum)

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP):
            previous[signum] = signal.signal(signum, handler)
        return previous

    def _handle(self, signum: int) -> None:
        if signum == signal.SIGTSTP:
            log.info("quieting %d worker process(es)", len(self.pids()))
            self._forward(signal.SIGTSTP)
            return
        if not self.stopping:
            log.info("stopping %d worker process(es)", len(self.pids()))
            self.stopping = True
            self.deadline = self.monotonic() + self.stop_timeout
            for child in self.children:
                if child.proc is None:
                    child.finished, child.restart_at = True, None
        self._forward(signal.SIGTERM)

    def _forward(self, signum: int) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signum)
                if signum == signal.SIGTERM:
                    child.proc.send_signal(signal.SIGCONT)  # in case a terminal suspended it

    def _spawn(self, child: Child) -> None:
        # The child inherits an ignored TSTP, so a quiet forwarded before it installs its own
        # handler cannot suspend it. (A TSTP sent to the supervisor during these few
        # milliseconds is lost; preexec_fn would avoid that but is unsafe with threads.)
        previous = signal.signal(signal.SIGTSTP, signal.SIG_IGN)
        try:
            env = dict(os.environ if self.env is None else self.env)
            env[SLOT_ENV] = str(child.slot)  # cpu_affinity=one spreads the slots over cores
            child.proc = subprocess.Popen(self.argv, env=env)
        finally:
            signal.signal(signal.SIGTSTP, previous)
        child.started = self.monotonic()
        child.restart_at = None
        log.info("worker process %d started (pid %d)", child.slot, child.proc.pid)

    def _reap(self, child: Child, now: float) -> None:
        if child.proc is None:
            return
        code = child.proc.poll()
        if code is None:
            return
        pid, child.proc = child.proc.pid, None
        if self.stopping or code == 0:
            child.finished = True
            log.info("worker process %d (pid %d) exited with %s", child.slot, pid, _status(code))
            return
        child.failures = (
            1 if now - child.started >= self.backoff.stable_after else child.failures + 1
        )
        delay = self.backoff.delay(child.failures)
        child.restart_at = now + delay
        log.warning(
            "worker process %d (pid %d) died (%s); restarting in %.1fs",
            child.slot,
            pid,
            _status(code),
            delay,
        )

    def _kill_all(self) -> None:
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                log.error(
                    "worker process %d (pid %d) still running at the stop deadline; killing it "
                    "(its jobs will be recovered)",
                    child.slot,
                    child.proc.pid,
                )
                child.proc.kill()
                child.proc.wait()
                self.killed += 1
                child.proc, child.finished = None, True


def _status(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


__all__ = ["Backoff", "Child", "Supervisor"]
