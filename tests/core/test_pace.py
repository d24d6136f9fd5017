"""The cap on threads running jobs (conveyor.core.pace), with real threads and a CPU clock the
test sets: the cap falls while the process keeps a core busy, rises at once when threads
block with jobs waiting, lets short jobs run beside long ones, and never strands a thread at
shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from conveyor.core.pace import MIN_ACTIVE, Pace
from tests.support import wait_for


class Meter:
    """A process CPU clock that runs at ``share`` of real time."""

    def __init__(self, share: float) -> None:
        self.share = share
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._cpu = 0.0

    def __call__(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._cpu += (now - self._last) * self.share
            self._last = now
            return self._cpu


@contextmanager
def threads(pace: Pace, n: int) -> Iterator[list[int]]:
    """``n`` threads doing 1 ms jobs between calls of ``between_jobs``; yields how many run
    a job at once, sampled by each job."""
    stop = threading.Event()
    seen: list[int] = []
    running = [0]
    lock = threading.Lock()

    def loop() -> None:
        while not stop.is_set():
            pace.between_jobs()
            with lock:
                running[0] += 1
                seen.append(running[0])
            time.sleep(0.001)
            with lock:
                running[0] -= 1

    started = [threading.Thread(target=loop, daemon=True) for _ in range(n)]
    for t in started:
        t.start()
    try:
        yield seen
    finally:
        stop.set()
        pace.stop()
        for t in started:
            t.join(5)
        assert not any(t.is_alive() for t in started), "a parked thread was stranded"


def test_a_busy_process_runs_jobs_on_few_threads_and_blocked_ones_get_them_all_back() -> None:
    meter = Meter(1.0)  # the process keeps a core busy
    waiting = [5]
    pace = Pace(10, waiting=lambda: waiting[0], cpu=meter)
    with threads(pace, 10) as seen:
        wait_for(lambda: pace.cap == MIN_ACTIVE and pace.active == MIN_ACTIVE, 10, "the cap")
        seen.clear()
        time.sleep(0.3)
        assert max(seen) <= MIN_ACTIVE
        meter.share = 0.1  # the threads now wait on I/O, jobs wait for a thread
        wait_for(lambda: pace.cap == 10 and pace.active == 10, 5, "every thread back")


def test_idle_threads_do_not_grow_the_cap_when_no_job_waits() -> None:
    meter = Meter(1.0)
    waiting = [0]
    pace = Pace(10, waiting=lambda: waiting[0], cpu=meter)
    with threads(pace, 10):
        wait_for(lambda: pace.cap == MIN_ACTIVE, 10, "the cap")
        meter.share = 0.1  # quiet: nothing waits, so nothing is gained by more threads
        time.sleep(0.5)
        assert pace.cap == MIN_ACTIVE
        waiting[0] = 3
        wait_for(lambda: pace.cap == 10, 5, "the cap raised")


def test_a_cap_is_raised_while_every_running_thread_is_blocked() -> None:
    # The parked watcher measures on its own: no running thread reaches between_jobs.
    meter = Meter(1.0)
    pace = Pace(MIN_ACTIVE + 2, waiting=lambda: 1, cpu=meter)
    blocking, release = threading.Event(), threading.Event()
    blocked: list[int] = []

    def loop() -> None:
        while not release.is_set():
            pace.between_jobs()
            if blocking.is_set():  # every job from now on blocks
                blocked.append(1)
                release.wait(10)
            else:
                time.sleep(0.001)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(MIN_ACTIVE + 2)]
    for t in workers:
        t.start()
    wait_for(lambda: pace.cap == MIN_ACTIVE and pace.active == MIN_ACTIVE, 10, "the cap")
    meter.share = 0.0
    blocking.set()
    wait_for(lambda: len(blocked) == MIN_ACTIVE + 2, 5, "the parked threads to take jobs")
    release.set()
    pace.stop()
    for t in workers:
        t.join(5)


def test_a_few_threads_are_never_paced() -> None:
    pace = Pace(MIN_ACTIVE, waiting=lambda: 0, cpu=Meter(1.0))
    assert not pace.enabled
    with threads(pace, MIN_ACTIVE) as seen:
        time.sleep(0.3)
    assert max(seen) == MIN_ACTIVE


def test_a_new_worker_starts_on_few_threads_and_blocked_jobs_get_every_thread_at_once() -> None:
    # Short jobs never pay for a ramp down from every thread (it took six windows, 0.6 s, a
    # third of a 20,000-job drain); jobs that block get every thread after one window.
    meter = Meter(0.1)  # the threads wait on I/O
    pace = Pace(10, waiting=lambda: 5, cpu=meter)
    assert pace.cap == MIN_ACTIVE
    started = time.monotonic()
    with threads(pace, 10):
        wait_for(lambda: pace.cap == 10 and pace.active == 10, 5, "every thread")
    assert time.monotonic() - started < 1.0


def test_long_jobs_do_not_hold_the_short_ones_back() -> None:
    # One core busy on the floor's threads: then every one of them runs a job for long
    # (LONG_JOB), and other threads take the short jobs beside them while they run.
    long_jobs, release = threading.Event(), threading.Event()
    in_long = [0]
    lock = threading.Lock()
    pace = Pace(10, waiting=lambda: 5, long_jobs=lambda: in_long[0], cpu=Meter(1.0))
    short: list[int] = []

    def loop() -> None:
        while not release.is_set():
            pace.between_jobs()
            with lock:
                goes_long = long_jobs.is_set() and in_long[0] < MIN_ACTIVE
                in_long[0] += goes_long
            if goes_long:
                release.wait(10)
            else:
                short.append(1)
                time.sleep(0.001)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(10)]
    for t in workers:
        t.start()
    try:
        wait_for(lambda: pace.cap == MIN_ACTIVE == pace.active, 5, "the floor")
        long_jobs.set()
        wait_for(lambda: in_long[0] == MIN_ACTIVE, 5, "the long jobs to start")
        done = len(short)
        wait_for(lambda: len(short) > done + 20, 5, "short jobs beside the long ones")
        assert pace.cap == MIN_ACTIVE and pace.long == MIN_ACTIVE
    finally:
        release.set()
        pace.stop()
        for t in workers:
            t.join(5)
