"""One worker process (SPEC CORE-3, CORE-4, CORE-7).

Threads: a fetcher moving jobs atomically from the queues into this process's working list;
``concurrency`` worker threads running them; a finisher acknowledging results in batches (one
Lua call per batch); a housekeeper sending heartbeats, recovering dead processes' jobs and
promoting scheduled jobs. Shutdown is two-phase, as in Sidekiq: quiet (stop fetching), then
stop with a deadline, after which unfinished jobs are requeued.
"""

from __future__ import annotations

import json
import logging
import os
import queue as queue_mod
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import psutil
import redis

from conveyor.core import recovery, scheduler
from conveyor.core.middleware import FetchedJob
from conveyor.core.processor import Processor, ProcessorHost, utc_day
from conveyor.redis import Outcome

log = logging.getLogger("conveyor.worker")

#: How long the fetcher blocks on an empty queue before looking again.
BLOCK_SINGLE = 1.0
BLOCK_MULTI = 0.25
# How often a worker whose queues are all gated shut looks again.
GATED_WAIT = 0.2
MAX_BATCH = 100


def make_identity() -> str:
    """``hostname:pid:nonce``, as Sidekiq names its processes."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"


@dataclass
class Counters:
    processed: int = 0
    failed: int = 0
    requeued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


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
        self.started_at = time.time()
        self.limit = self.settings.concurrency + self.settings.effective_prefetch
        # Refill only once this many slots are free, so a busy worker fetches (and prepares
        # and acknowledges) in batches rather than one job per round trip.
        self.refill = max(1, min(self.limit // 2, MAX_BATCH))
        self._units: queue_mod.SimpleQueue[FetchedJob | None] = queue_mod.SimpleQueue()
        self._inflight = 0
        self._cond = threading.Condition()
        self._busy: dict[str, tuple[str, str, int]] = {}
        self._outcomes: list[tuple[Outcome, FetchedJob]] = []
        self._outcome_cond = threading.Condition()
        self._quiet = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._housekeeping_stop = threading.Event()
        self._housekeeping: threading.Thread | None = None
        self._finisher_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._fetcher: threading.Thread | None = None
        self._finisher_thread: threading.Thread | None = None
        self._rng = random.Random()
        self._rss_proc = psutil.Process()
        self._info = json.dumps(
            {
                "hostname": socket.gethostname(),
                "started_at": self.started_at,
                "pid": os.getpid(),
                "tag": self.settings.tag,
                "concurrency": self.settings.concurrency,
                "queues": list(self.settings.queue_names),
                "labels": list(self.settings.labels),
                "identity": self.identity,
                "version": "conveyor",
            }
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Register (first heartbeat) and start every thread; returns at once."""
        # The liveness key must exist before anything enters our working list, or a sweep
        # elsewhere could take our jobs for orphans.
        self.heartbeat()
        self._housekeeping = self._spawn(self._housekeeper, "conveyor-housekeeper")
        self._finisher_thread = self._spawn(self._finisher, "conveyor-finisher")
        for i in range(self.settings.concurrency):
            self._workers.append(self._spawn(self._work, f"conveyor-worker-{i}"))
        if self.app.periodic_tasks:
            self._spawn(self._periodic, "conveyor-periodic")
        self._fetcher = self._spawn(self._fetch_loop, "conveyor-fetcher")
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
            with self._cond:
                self._cond.notify_all()

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
        deadline = time.monotonic() + self.settings.shutdown_timeout
        self.quiet()
        if self._fetcher is not None:
            self._fetcher.join(timeout=BLOCK_SINGLE + 5)
        self._return_unstarted()
        for _ in self._workers:
            self._units.put(None)
        for thread in self._workers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        # Acknowledge what finished before giving back what did not, so a finished job is
        # never requeued.
        self._finisher_stop.set()
        with self._outcome_cond:
            self._outcome_cond.notify_all()
        if self._finisher_thread is not None:
            self._finisher_thread.join(timeout=30)
        self._flush_outcomes(final=True)
        left = list(self._busy.values())
        if left:
            moved = self._requeue([(q, raw) for q, raw, _ in left])
            log.warning(
                "worker %s: %d job(s) still running at the %.0fs deadline were requeued",
                self.identity,
                moved,
                self.settings.shutdown_timeout,
            )
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

    def _return_unstarted(self) -> None:
        unstarted: list[FetchedJob] = []
        while True:
            try:
                unit = self._units.get_nowait()
            except queue_mod.Empty:
                break
            if unit is not None:
                unstarted.append(unit)
        if unstarted:
            self._batch_hook("abandon_batch", unstarted)
            self._requeue([(u.queue, u.raw) for u in unstarted])
            with self._cond:
                self._inflight -= len(unstarted)

    def _batch_hook(self, hook: str, units: list[FetchedJob], *, attempts: int = 1) -> None:
        """Run a server-middleware batch hook over the decodable jobs of a batch, retrying a
        Redis failure up to ``attempts`` times (a middleware's per-job hooks cover a batch
        whose ``prepare_batch`` failed)."""
        jobs = [u for u in units if u.job is not None and u.handed_off is None]
        if not jobs:
            return
        for middleware in self.app.server_middleware:
            for attempt in range(attempts):
                try:
                    getattr(middleware, hook)(jobs)
                    break
                except redis.RedisError as exc:
                    log.error("%s.%s failed (%s)", type(middleware).__name__, hook, exc)
                    time.sleep(min(5.0, 0.1 * 2**attempt) if attempt + 1 < attempts else 0)
                except Exception:
                    log.exception("%s.%s failed", type(middleware).__name__, hook)
                    break

    def _requeue(self, jobs: list[tuple[str, str]]) -> int:
        for attempt in range(5):
            try:
                moved = self.store.requeue(self.identity, jobs)
                self.counters.requeued += moved
                return moved
            except redis.RedisError as exc:
                log.error("requeue failed (%s); retrying", exc)
                time.sleep(0.2 * (attempt + 1))
        return 0  # still in the working list: recovered once our liveness key expires

    # -- fetching -------------------------------------------------------------------------------
    def _queue_order(self) -> list[str]:
        queues = self.settings.queues
        gates = self.app.queue_gates
        if gates:
            queues = tuple((name, w) for name, w in queues if self._gate_open(name))
        if self.settings.strict_order or len(queues) <= 1:
            return [name for name, _ in queues]
        # Weighted random order, as Sidekiq: a queue of weight 3 comes first 3x as often.
        pool = [name for name, weight in queues for _ in range(weight)]
        self._rng.shuffle(pool)
        return list(dict.fromkeys(pool))

    def _gate_open(self, queue: str) -> bool:
        gate = self.app.queue_gates.get(queue)
        if gate is None:
            return True
        try:
            return bool(gate())
        except Exception:
            log.exception("queue gate of %s failed; treating the queue as open", queue)
            return True

    def _fetch_loop(self) -> None:
        failures = 0
        while not self._quiet.is_set():
            with self._cond:
                while self._inflight > self.limit - self.refill and not self._quiet.is_set():
                    self._cond.wait(0.5)
                free = self.limit - self._inflight
            if self._quiet.is_set():
                break
            order = self._queue_order()
            if not order:  # every queue gated shut: look again shortly
                self._quiet.wait(GATED_WAIT)
                continue
            try:
                jobs = self.store.fetch(self.identity, order, min(free, MAX_BATCH))
                if not jobs and self.burst:
                    found = self._burst_check(order, free)
                    if found is None:
                        log.info("burst: queues empty, stopping")
                        self.stop()
                        break
                    jobs = found
                elif not jobs:
                    block = BLOCK_SINGLE if len(order) == 1 else BLOCK_MULTI
                    raw = self.store.fetch_blocking(self.identity, order[0], block)
                    jobs = [(order[0], raw)] if raw is not None else []
                failures = 0
            except redis.RedisError as exc:
                failures += 1
                log.error("fetch failed (%s); retrying", exc)
                time.sleep(min(5.0, 0.1 * 2**failures))
                continue
            if not jobs:
                continue
            if self._quiet.is_set():  # quieted while we were blocked: hand them straight back
                self._requeue(jobs)
                break
            self._dispatch([self.processor.fetched(q, raw) for q, raw in jobs])
        # Prefetched jobs nobody started go back at once, so other processes can take them.
        self._return_unstarted()
        log.debug("fetcher stopped")

    def _burst_check(self, order: list[str], free: int) -> list[tuple[str, str]] | None:
        """Burst mode, nothing fetched: ``None`` once the queues are empty while no job runs,
        else the jobs to dispatch (none yet while jobs still run)."""
        if not self._idle():
            time.sleep(0.01)
            return []
        # Nothing runs now, so what a job enqueued just before it finished is visible (the
        # fetch above may have run before that push): look once more before stopping.
        return self.store.fetch(self.identity, order, min(free, MAX_BATCH)) or None

    def _dispatch(self, units: list[FetchedJob]) -> None:
        # Middleware do their Redis work for the whole batch first (one round trip each); a job
        # they hand off (e.g. deferred by a concurrency limit) already left the working list.
        self._batch_hook("prepare_batch", units)
        kept = [u for u in units if u.handed_off is None]
        with self._cond:
            self._inflight += len(kept)
        for unit in kept:
            self._units.put(unit)

    def _idle(self) -> bool:
        with self._cond:
            return self._inflight == 0

    # -- running --------------------------------------------------------------------------------
    def _work(self) -> None:
        tid = format(threading.get_ident(), "x")
        while True:
            unit = self._units.get()
            if unit is None:
                return
            self._busy[tid] = (unit.queue, unit.raw, int(time.time()))
            try:
                outcome = self.processor.process(unit)
            except BaseException:  # a bug in Conveyor itself: leave the job to recovery
                log.exception("processor crashed on a job from %s", unit.queue)
            else:
                with self._outcome_cond:
                    self._outcomes.append((outcome, unit))
                    self._outcome_cond.notify()
            self._busy.pop(tid, None)
            with self._cond:
                self._inflight -= 1
                self._cond.notify()

    def _finisher(self) -> None:
        while not self._finisher_stop.is_set():
            with self._outcome_cond:
                while not self._outcomes and not self._finisher_stop.is_set():
                    self._outcome_cond.wait(0.5)
            self._flush_outcomes()

    def _flush_outcomes(self, final: bool = False) -> None:
        with self._outcome_cond:
            batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        settings = self.settings
        attempts = 10 if final else 1_000_000
        self._batch_hook("settle_batch", [unit for _, unit in batch], attempts=attempts)
        outcomes = [outcome for outcome, _ in batch]
        for attempt in range(attempts):
            now = self.app.clock.time()
            try:
                self.store.finish(
                    self.identity,
                    outcomes,
                    utc_day(now),
                    settings.dead_max_jobs,
                    now - settings.dead_timeout,
                )
                break
            except redis.RedisError as exc:
                log.error("acknowledging %d job(s) failed (%s); retrying", len(outcomes), exc)
                time.sleep(min(5.0, 0.1 * 2**attempt))
        failed = sum(1 for o in outcomes if o.kind not in ("ok", "gone"))
        processed = sum(1 for o in outcomes if o.kind != "gone")
        with self.counters.lock:
            self.counters.processed += processed
            self.counters.failed += failed

    # -- housekeeping ---------------------------------------------------------------------------
    def heartbeat(self) -> None:
        work = {
            tid: json.dumps({"queue": q, "payload": raw, "run_at": run_at})
            for tid, (q, raw, run_at) in list(self._busy.items())
        }
        _, sig = self.store.heartbeat(
            self.identity,
            info=self._info,
            busy=len(work),
            beat=time.time(),
            quiet=self._quiet.is_set(),
            rss_kb=self._rss_proc.memory_info().rss // 1024,
            rtt_us=self.store.rtt_us(),
            work=work,
            process_ttl=60,
            liveness_ttl_ms=int(self.settings.liveness_ttl * 1000),
        )
        if sig == "TSTP":
            self.quiet()
        elif sig == "TERM":
            self.stop()

    def _housekeeper(self) -> None:
        settings = self.settings
        now = time.monotonic()
        next_beat = now + settings.heartbeat_interval
        next_sweep = now + self._rng.uniform(0, settings.recovery_interval)
        next_poll = now + self._rng.uniform(0, settings.poll_interval_average)
        while not self._housekeeping_stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + settings.heartbeat_interval
                    self.heartbeat()
                if now >= next_sweep:
                    next_sweep = now + settings.recovery_interval * self._rng.uniform(0.8, 1.2)
                    if self.store.try_lock(
                        "recovery", self.identity, int(settings.recovery_interval * 900)
                    ):
                        recovery.sweep(self.app, self.identity)
                if now >= next_poll and not self._stop.is_set():
                    processes = self.store.process_count()
                    next_poll = now + scheduler.poll_interval(
                        settings.poll_interval_average, processes, self._rng
                    )
                    scheduler.enqueue_due(self.app)
            except redis.RedisError as exc:
                log.error("housekeeping failed: %s", exc)
            wake = min(next_beat, next_sweep, next_poll) - time.monotonic()
            self._housekeeping_stop.wait(max(0.01, min(wake, 1.0)))

    def _periodic(self) -> None:
        """Feature tasks (cron, resuming deferred jobs...), apart from the heartbeat so a slow
        task can never make this process look dead."""
        start = time.monotonic()
        due = {t.name: start + self._rng.uniform(0, t.interval) for t in self.app.periodic_tasks}
        while not self._stop.is_set():
            now = time.monotonic()
            for task in self.app.periodic_tasks:
                if now >= due.get(task.name, now):
                    due[task.name] = now + task.interval * self._rng.uniform(0.9, 1.1)
                    try:
                        task.run()
                    except Exception:
                        log.exception("periodic task %s failed", task.name)
            wake = min(due.values(), default=now + 1.0) - time.monotonic()
            self._stop.wait(max(0.01, min(wake, 1.0)))
