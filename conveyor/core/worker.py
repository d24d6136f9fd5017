"""One worker process (SPEC CORE-3, CORE-4, CORE-7): threads, signals and two-phase shutdown.

Threads: a fetcher (:mod:`conveyor.core.fetch`) moving jobs atomically from the queues into
this process's working list; ``concurrency`` worker threads running them; a finisher
(:mod:`conveyor.core.finisher`) acknowledging results in batches; a housekeeper
(:mod:`conveyor.core.housekeeping`) sending heartbeats, recovering dead processes' jobs and
promoting scheduled jobs. Shutdown is two-phase, as in Sidekiq: quiet (stop fetching), then
stop with a deadline, after which unfinished jobs are requeued.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import socket
import threading
from collections.abc import Callable
from types import FrameType

import redis

from conveyor.core.fetch import BLOCK_SINGLE, MAX_BATCH, Fetch, Fetcher, Units
from conveyor.core.finisher import Counters, Finisher
from conveyor.core.housekeeping import BusyMap, Heartbeat, Housekeeper, run_periodic
from conveyor.core.processor import Processor, ProcessorHost

log = logging.getLogger("conveyor.worker")

__all__ = ["Counters", "Worker", "make_identity"]


def make_identity() -> str:
    """``hostname:pid:nonce``, as Sidekiq names its processes.

    >>> make_identity().count(":")
    2
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


class Worker:
    """Runs jobs from the app's queues until stopped.

    >>> worker = Worker(app)            # doctest: +SKIP
    >>> worker.run()                    # blocks; SIGTERM/SIGINT stop it, SIGTSTP quiets it
    """

    def __init__(
        self, app: ProcessorHost, *, burst: bool = False, identity: str | None = None
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.burst = burst
        self.identity = identity or make_identity()
        self.processor = Processor(app, identity=self.identity)
        self.counters = Counters()
        self.started_at = app.clock.time()
        self.limit = self.settings.concurrency + self.settings.effective_prefetch
        self.refill = max(1, min(self.limit // 2, MAX_BATCH))
        self._rng = random.Random()
        self._quiet = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._housekeeping_stop = threading.Event()
        self._finisher_stop = threading.Event()
        self._busy: BusyMap = {}
        self.units = Units(self.limit, self.refill)
        self.fetch = Fetch(app, self.identity, rng=self._rng)
        self.fetcher = Fetcher(
            self.fetch,
            self.units,
            self.processor,
            quiet=self._quiet,
            on_burst_end=self.stop,
            burst=burst,
        )
        self.finisher = Finisher(app, self.identity, self.counters)
        self._heartbeat = Heartbeat(app, self.identity, started_at=self.started_at)
        self.housekeeper = Housekeeper(
            app, self.identity, self.heartbeat, stopping=self._stop, rng=self._rng
        )
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._fetcher_thread: threading.Thread | None = None
        self._finisher_thread: threading.Thread | None = None
        self._housekeeping: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Register (first heartbeat) and start every thread; returns at once."""
        # The liveness key must exist before anything enters our working list, or a sweep
        # elsewhere could take our jobs for orphans.
        self.heartbeat()
        self._housekeeping = self._spawn(
            lambda: self.housekeeper.run(self._housekeeping_stop), "conveyor-housekeeper"
        )
        self._finisher_thread = self._spawn(
            lambda: self.finisher.run(self._finisher_stop), "conveyor-finisher"
        )
        for i in range(self.settings.concurrency):
            self._workers.append(self._spawn(self._work, f"conveyor-worker-{i}"))
        if self.app.periodic_tasks:
            self._spawn(lambda: run_periodic(self.app, self._stop, self._rng), "conveyor-periodic")
        self._fetcher_thread = self._spawn(self.fetcher.run, "conveyor-fetcher")
        log.info(
            "worker %s started: %d threads, queues %s",
            self.identity,
            self.settings.concurrency,
            ",".join(self.settings.queue_names),
        )

    def run(self, install_signals: bool = True) -> None:
        """Start, then block until stopped (signal, Redis signal, :meth:`stop` or burst end)."""
        if install_signals and threading.current_thread() is threading.main_thread():
            self._install_signals()
        self.start()
        while not self._stop.wait(0.2):
            pass
        self._shutdown()

    def quiet(self) -> None:
        """Stop fetching new jobs; running jobs finish. Unstarted prefetched jobs go back."""
        if not self._quiet.is_set():
            log.info("worker %s quieting", self.identity)
            self._quiet.set()
            self.units.wake()

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (returns at once; :meth:`run` does the work)."""
        self.quiet()
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the worker has fully shut down."""
        return self._done.wait(timeout)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def heartbeat(self) -> None:
        """Publish one heartbeat and obey a signal sent through Redis."""
        sig = self._heartbeat.beat(self._busy, quiet=self._quiet.is_set())
        if sig == "TSTP":
            self.quiet()
        elif sig == "TERM":
            self.stop()

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _install_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.stop()

        def on_quiet(signum: int, frame: FrameType | None) -> None:
            self.quiet()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTSTP, on_quiet)

    def _shutdown(self) -> None:
        clock = self.app.clock
        deadline = clock.monotonic() + self.settings.shutdown_timeout
        self.quiet()
        if self._fetcher_thread is not None:
            self._fetcher_thread.join(timeout=BLOCK_SINGLE + 5)
        self.fetcher.return_unstarted()
        self.units.release(len(self._workers))
        for thread in self._workers:
            thread.join(timeout=max(0.0, deadline - clock.monotonic()))
        # Acknowledge what finished before giving back what did not, so a finished job is
        # never requeued.
        self._finisher_stop.set()
        self.finisher.wake()
        if self._finisher_thread is not None:
            self._finisher_thread.join(timeout=30)
        self.finisher.flush(final=True)
        left = list(self._busy.values())
        if left:
            moved = self.fetch.give_back([(q, raw) for q, raw, _ in left])
            self.counters.requeued += moved
            log.warning(
                "worker %s: %d job(s) still running at the %.0fs deadline were requeued",
                self.identity,
                moved,
                self.settings.shutdown_timeout,
            )
        self.counters.requeued += self.fetcher.requeued
        # No heartbeat may follow the unregistering, or the process would reappear for 60 s.
        self._housekeeping_stop.set()
        if self._housekeeping is not None:
            self._housekeeping.join(timeout=30)
        try:
            remaining = self.store.unregister(self.identity)
            if remaining:
                log.warning("%d job(s) left in the working list will be recovered", remaining)
        except redis.RedisError as exc:
            log.error("could not unregister %s: %s", self.identity, exc)
        self.processor.runner.close()
        log.info(
            "worker %s stopped: %d processed, %d failed",
            self.identity,
            self.counters.processed,
            self.counters.failed,
        )
        self._done.set()

    # -- running --------------------------------------------------------------------------------
    def _work(self) -> None:
        tid = format(threading.get_ident(), "x")
        clock = self.app.clock
        while True:
            unit = self.units.take()
            if unit is None:
                return
            self._busy[tid] = (unit.queue, unit.raw, int(clock.time()))
            try:
                outcome = self.processor.process(unit)
            except BaseException:  # a bug in Conveyor itself: leave the job to recovery
                log.exception("processor crashed on a job from %s", unit.queue)
            else:
                self.finisher.add(outcome, unit)
            self._busy.pop(tid, None)
            self.units.done()
