"""How many of a worker's threads run jobs at once: enough to keep the process busy, no more.

Under CPython's GIL, threads beyond what keeps one core busy add no throughput on short jobs,
and every job then pays for the GIL hand-offs between them: a job making one Redis call costs
about 107 µs of CPU with one thread and 161 µs with ten, for no more jobs per second
(docs/concurrency-model.md). So the threads beyond a *cap* park between two jobs, and the cap
follows the process's CPU share, measured over windows of :data:`WINDOW` seconds, from
:data:`MIN_ACTIVE` at the start:

- above :data:`HIGH` (the process keeps a core busy), the cap drops by one, never below
  :data:`MIN_ACTIVE`;
- below :data:`LOW` while jobs wait for a thread (threads are blocked in I/O, sleeps or
  locks), it rises at once to what the idle share suggests, up to every thread: jobs that wait
  on the network get all the threads within a window or two;
- a thread whose job has run for more than a second (:data:`LONG_JOB`) does not count
  against the cap while jobs wait, so long jobs never hold the short ones back.

A parked thread takes no job, so nothing fetched waits on it: the jobs stay in the process's
queue, taken in order by the running threads. One parked thread at a time (the *watcher*)
wakes every window to measure, so a cap is raised even while every running thread is blocked
in a long job.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable

#: Seconds over which the CPU share is measured.
WINDOW = 0.1
#: CPU share (of one core) below which jobs that wait for a thread get more threads.
LOW = 0.75
#: CPU share above which one thread fewer runs jobs.
HIGH = 0.92
#: Threads that always run jobs. Two would do for one process alone on a machine (the second
#: overlaps the first one's round trips), but with a process per core the cores are shared
#: with Redis and each other: with two per process, `-p 2` A/B runs drained 10-20 % less than
#: without pacing; with four, as much (docs/concurrency-model.md).
MIN_ACTIVE = 4
#: Seconds (by the start time the worker records, whole seconds) after which a running job
#: no longer counts against the cap.
LONG_JOB = 2


def long_running(busy: Iterable[tuple[str, str, int]], now: float) -> int:
    """How many of the running jobs (queue, payload, start in whole seconds, as the worker
    records them for its heartbeat) have run for longer than :data:`LONG_JOB` seconds.

    >>> long_running([("q", "{}", 100), ("q", "{}", 97)], now=100.5)
    1
    """
    return sum(1 for _, _, started in list(busy) if now - started > LONG_JOB)


def raised(cap: int, share: float, concurrency: int) -> int:
    """The cap for jobs waiting while the process used ``share`` of a core with ``cap``
    threads: enough threads to reach :data:`HIGH`, at least one more.

    >>> raised(2, 0.5, 10), raised(2, 0.0, 10), raised(9, 0.7, 10)
    (4, 10, 10)
    """
    wanted = math.ceil(cap * HIGH / max(share, 0.05))
    return min(concurrency, max(cap + 1, wanted))


class Pace:
    """The cap on threads running jobs; worker threads call :meth:`between_jobs` before they
    take a job (it returns at once while no more than ``cap`` threads run). ``waiting``
    counts the jobs that wait for a thread, ``long_jobs`` the running jobs that have run for
    long (:func:`long_running`).

    >>> pace = Pace(10, waiting=lambda: 0)
    >>> pace.cap
    4
    """

    def __init__(
        self,
        concurrency: int,
        *,
        waiting: Callable[[], int],
        long_jobs: Callable[[], int] = lambda: 0,
        cpu: Callable[[], float] = time.process_time,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        # Start on few threads: raising the cap takes one window, lowering it one window per
        # thread (short jobs would pay for a ramp down from every thread).
        self.cap = min(concurrency, MIN_ACTIVE)
        #: Threads not parked.
        self.active = concurrency
        #: Threads in a job that has run for long (:data:`LONG_JOB`): not counted by the cap.
        self.long = 0
        self.enabled = concurrency > MIN_ACTIVE
        self._waiting = waiting
        self._long_jobs = long_jobs
        self._cpu = cpu
        self._now = now
        self._cond = threading.Condition()
        self._watcher = False
        self._stopped = False
        self._mark = (now(), cpu())

    def between_jobs(self) -> None:
        """Park the calling thread while more threads run than the cap allows."""
        if not self.enabled:
            return
        if self._now() - self._mark[0] >= WINDOW:
            with self._cond:
                self._tick()
        if self.active > self.cap + self.long:
            self._park()

    def stop(self) -> None:
        """Every parked thread carries on (to take the end-of-work marker)."""
        with self._cond:
            self._stopped = True
            self.cap = self.concurrency
            self._cond.notify_all()

    def _tick(self) -> None:
        """Measure the window that ended and move the cap (lock held)."""
        t = self._now()
        t0, c0 = self._mark
        if t - t0 < WINDOW or self._stopped:
            return  # another thread measured it
        c = self._cpu()
        self._mark = (t, c)
        share = (c - c0) / (t - t0)
        was = self.cap + self.long
        waiting = self._waiting() > 0
        self.long = self._long_jobs() if waiting else 0
        cap = self.cap
        if share < LOW and cap < self.concurrency and waiting:
            cap = raised(cap, share, self.concurrency)
        elif share > HIGH and cap > MIN_ACTIVE:
            cap -= 1
        self.cap = cap
        if cap + self.long > was:
            self._cond.notify(cap + self.long - self.active)

    def _park(self) -> None:
        with self._cond:
            if self.active <= self.cap + self.long:
                return
            self.active -= 1
            try:
                while self.active >= self.cap + self.long and not self._stopped:
                    if self._watcher:
                        self._cond.wait()
                        continue
                    self._watcher = True
                    try:
                        self._cond.wait(WINDOW)
                    finally:
                        self._watcher = False
                    self._tick()
            finally:
                self.active += 1
            # Another parked thread becomes the watcher, or takes a slot still free.
            self._cond.notify()
