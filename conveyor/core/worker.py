"""One worker process (SPEC CORE-3, CORE-4, CORE-7): threads, signals and two-phase shutdown.

Threads: a fetcher (:mod:`conveyor.core.fetch`) moving jobs atomically from the queues into
this process's working list; ``concurrency`` worker threads running them; a finisher
(:mod:`conveyor.core.finisher`) acknowledging results in batches; a heartbeat; a housekeeper
(:mod:`conveyor.core.housekeeping`) recovering dead processes' jobs, reconciling its own
working list and promoting scheduled jobs. Every loop survives what it meets
(:mod:`conveyor.core.health`); a loop that cannot carry on, or one wedged, makes the process
exit with :data:`EXIT_UNHEALTHY`. Shutdown is two-phase, as in Sidekiq: quiet (stop fetching),
then stop with a deadline, after which unfinished jobs are requeued.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis

from conveyor.clock import SYSTEM_CLOCK
from conveyor.core.fetch import BLOCK_SINGLE, Fetch, Fetcher
from conveyor.core.finisher import Counters, Finisher
from conveyor.core.health import EXIT_UNHEALTHY, MAX_BACKOFF, Health, LoopState, Unhealthy, run_loop
from conveyor.core.housekeeping import BusyMap, Heartbeat, Housekeeper, Periodic
from conveyor.core.middleware import FetchedJob
from conveyor.core.pace import Pace, long_running
from conveyor.core.processor import Processor, ProcessorHost, run_stop_hooks
from conveyor.core.units import Units, refill_for
from conveyor.redis import Outcome

log = logging.getLogger("conveyor.worker")

__all__ = ["EXIT_UNHEALTHY", "Counters", "Worker", "make_identity"]

#: Seconds without progress after which the fetch or finish loop counts as wedged.
WEDGE_AFTER = 60.0


def make_identity() -> str:
    """``hostname:pid:nonce``, as Sidekiq names its processes.

    >>> make_identity().count(":")
    2
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


class Worker(Unhealthy):
    """Runs jobs from the app's queues until stopped.

    >>> worker = Worker(app)            # doctest: +SKIP
    >>> worker.run()                    # blocks; SIGTERM/SIGINT stop it, SIGTSTP quiets it
    """

    def __init__(
        self,
        app: ProcessorHost,
        *,
        burst: bool = False,
        identity: str | None = None,
        wedge_after: float = WEDGE_AFTER,
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.burst = burst
        self.identity = identity or make_identity()
        self.processor = Processor(app, identity=self.identity)
        self.counters = Counters()
        self.started_at = app.clock.time()
        limit = self.settings.concurrency + self.settings.effective_prefetch
        self._rng = random.Random()
        self._quiet = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._housekeeping_stop = threading.Event()
        self._finisher_stop = threading.Event()
        self._busy: BusyMap = {}
        self._beats = threading.Event()  # set: stop heartbeating
        #: Non-zero once the process must exit unhealthy (see :data:`EXIT_UNHEALTHY`).
        self.exit_code = 0
        #: Why this mode, for the start line (``worker_mode=auto``, set by ``create_worker``).
        self.mode_note = ""
        # Wedged loops and the liveness known from the last heartbeat are measured in real
        # time, whatever clock the app has: threads and Redis TTLs run in real time (a test's
        # fake clock, advanced by its jobs, would fire them falsely).
        self.health = Health(SYSTEM_CLOCK)
        self.wedge_after = wedge_after
        self.units = Units(
            limit,
            refill_for(limit, self.settings.concurrency),
            concurrency=self.settings.concurrency,
            clock=SYSTEM_CLOCK,
            adaptive=self.settings.prefetch is None,  # the prefetch follows the jobs' run time
        )
        #: Threads beyond what keeps the process busy park between jobs (core/pace.py).
        self.pace = Pace(
            self.settings.concurrency,
            waiting=self.units.waiting,
            long_jobs=lambda: long_running(self._busy.values(), self.app.clock.time()),
        )
        self.fetch = Fetch(app, self.identity, rng=self._rng)
        self.fetcher = Fetcher(
            self.fetch,
            self.units,
            self.processor,
            quiet=self._quiet,
            on_burst_end=self.stop,
            burst=burst,
        )
        self.finisher = Finisher(app, self.identity, self.counters, self.units)
        self._heartbeat = Heartbeat(app, self.identity, started_at=self.started_at)
        self.housekeeper = Housekeeper(
            app,
            self.identity,
            units=self.units,
            health=self.health,
            stopping=self._stop,
            rng=self._rng,
        )
        self._beat_count = 0
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._fetcher_thread: threading.Thread | None = None
        self._finisher_thread: threading.Thread | None = None
        self._housekeeping: threading.Thread | None = None
        self._heartbeat_thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Register (first heartbeat) and start every thread; returns at once."""
        # The liveness key must exist before anything enters our working list, or a sweep
        # elsewhere could take our jobs for orphans.
        self.heartbeat()
        wedge = self.wedge_after
        self._heartbeat_thread = self._loop(
            "heartbeat",
            0,
            self._beat_step,
            self._beats,
            max_backoff=self.settings.heartbeat_interval / 2,
        )
        self._housekeeping = self._loop(
            "housekeeping", wedge * 5, self.housekeeper.step, self._housekeeping_stop
        )
        self._finisher_thread = self._loop("finish", wedge, self.finisher.step, self._finisher_stop)
        for i in range(self.settings.concurrency):
            self._workers.append(self._spawn(self._work, f"conveyor-worker-{i}"))
        if self.app.periodic_tasks:
            periodic = Periodic(self.app, self._rng)
            self._loop("periodic", wedge * 10, periodic.step, self._stop)
        self._fetcher_thread = self._loop(
            "fetch", wedge, lambda _: self.fetcher.step(), self._quiet, then=self._fetch_done
        )
        log.info(
            "worker %s started: %d threads, queues %s%s",
            self.identity,
            self.settings.concurrency,
            ",".join(self.settings.queue_names),
            self.mode_note,
        )

    def _loop(
        self,
        name: str,
        bound: float,
        step: Callable[[threading.Event], bool],
        stop: threading.Event,
        then: Callable[[], None] | None = None,
        *,
        max_backoff: float = MAX_BACKOFF,
    ) -> threading.Thread:
        state: LoopState = self.health.register(name, bound, max_backoff=max_backoff)

        def target() -> None:
            run_loop(self.health, state, lambda: step(stop), stop, self.fatal)
            if then is not None:
                then()

        return self._spawn(target, f"conveyor-{name}")

    def _fetch_done(self) -> None:
        # Prefetched jobs nobody started go back at once, so other processes can take them.
        try:
            self.fetcher.return_unstarted()
        except Exception:
            log.exception("giving back unstarted jobs failed; they will be recovered")
        log.debug("fetcher stopped")

    def run(self, install_signals: bool = True) -> None:
        """Start, then block until stopped (signal, Redis signal, :meth:`stop` or burst end)."""
        if install_signals and threading.current_thread() is threading.main_thread():
            self._install_signals()
        self.start()
        while not self._stop.wait(0.2):
            pass
        self._shutdown()
        if self.exit_code:
            raise SystemExit(self.exit_code)

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

    @property
    def limit(self) -> int:
        """Jobs this process may hold now: threads + prefetch (which may follow the jobs)."""
        return self.units.limit

    def heartbeat(self) -> None:
        """Publish one heartbeat and obey a signal sent through Redis."""
        sent = SYSTEM_CLOCK.monotonic()
        sig, alive = self._heartbeat.beat(
            self._busy, quiet=self._quiet.is_set(), health=self.health.report()
        )
        self._beat_count += 1
        if not alive and self._beat_count > 1:
            # Our liveness key had expired (SIGSTOP, a long pause): another process may have
            # recovered our jobs. Those not started here must not run a second time.
            dropped = self.units.discard_missing(self.store.working_jobs(self.identity))
            log.warning(
                "worker %s was taken for dead; %d fetched job(s) recovered elsewhere dropped",
                self.identity,
                len(dropped),
            )
        # The key lives liveness_ttl from when Redis ran the script, which is after ``sent``.
        self.units.alive_until(sent + self.settings.liveness_ttl)
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
        self.processor.stopping = True
        self.quiet()
        if self.exit_code:  # unhealthy: leave at once, jobs are recovered as a dead one's
            self._housekeeping_stop.set()
            self._finisher_stop.set()
            self.pace.stop()
            self.units.release(len(self._workers))
            self._unregister()
            self._done.set()
            return
        if self._fetcher_thread is not None:
            self._fetcher_thread.join(timeout=BLOCK_SINGLE + 5)
        self._fetch_done()
        self.pace.stop()
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
            self.units.release_held(raw for _, raw, _ in left)
            self.counters.requeued += moved
            log.warning(
                "worker %s: %d job(s) still running at the %.0fs deadline were requeued",
                self.identity,
                moved,
                self.settings.shutdown_timeout,
            )
        self.counters.requeued += self.fetcher.requeued
        self._housekeeping_stop.set()
        if self._housekeeping is not None:
            self._housekeeping.join(timeout=30)
        run_stop_hooks(self.app, self.identity)
        self._unregister()
        self.processor.runner.close()
        log.info(
            "worker %s stopped: %d processed, %d failed",
            self.identity,
            self.counters.processed,
            self.counters.failed,
        )
        self._done.set()

    def _unregister(self) -> None:
        # No heartbeat may follow the unregistering, or the process would reappear for 60 s.
        self._beats.set()
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=30)
        try:
            remaining = self.store.unregister(self.identity)
            if remaining:
                log.warning("%d job(s) left in the working list will be recovered", remaining)
        except redis.RedisError as exc:
            log.error("could not unregister %s: %s", self.identity, exc)

    # -- running --------------------------------------------------------------------------------
    def _work(self) -> None:
        tid = format(threading.get_ident(), "x")
        while True:
            try:
                self.pace.between_jobs()
                taken = self.units.take()
                if taken is None:
                    return
                self._run_one(tid, *taken)
            except BaseException:  # never let a worker thread die: log it and carry on
                log.exception("worker thread %s failed; carrying on", tid)

    def _run_one(self, tid: str, seq: int, unit: FetchedJob) -> None:
        self._busy[tid] = (unit.queue, unit.raw, int(self.app.clock.time()))
        seconds: float | None = None
        try:
            if not self.units.may_start(seq, unit.raw):
                return  # recovered by another process while this one was taken for dead
            # Run time in real time, whatever the app's clock: it sizes the prefetch and the
            # permits, which are about real threads and round trips.
            started = time.perf_counter()
            outcome = self._outcome(unit)
            seconds = time.perf_counter() - started
            if outcome is not None:
                self.finisher.add(outcome, unit, seconds)
        finally:
            self._busy.pop(tid, None)
            self.units.done(seq, seconds)

    def _outcome(self, unit: FetchedJob) -> Outcome | None:
        try:
            return self.processor.process(unit)
        except KeyboardInterrupt:  # only raised at shutdown: the job goes back unfinished
            self.fetcher.give_back([unit])
            return None
        except BaseException as exc:  # a bug in Conveyor or a hook: file the job, never strand it
            log.exception("processor crashed on a job from %s; filing it as dead", unit.queue)
            return self.processor.crashed(unit, exc)
