"""One worker process in asyncio mode (``conveyor worker --mode asyncio``, see
docs/concurrency-model.md).

``async def`` jobs are fetched, run and acknowledged on one event loop, with no thread hop:
a fetch task moves jobs from the queues into this process's working list (``fetch.lua``, or
``BLMOVE`` when the queues are empty), ``concurrency`` slot tasks await the jobs, and a finish
task acknowledges whatever finished since its last round trip in one ``finish.lua`` call. These
are the threaded worker's scripts and lists, so reliability is the same: a job is always in a
queue or in the working list until its outcome is recorded, and a process that dies has its
working list recovered by the others.

Jobs whose ``perform`` is not ``async def`` still run, in a small pool of threads (one per slot
at most), so an app mixing both kinds works; they pay the thread hop the async jobs avoid.

Heartbeat, recovery sweeps, the scheduled poller and periodic tasks run in their own threads on
the synchronous store, so an event loop kept busy by a job never makes the process look dead.
Shutdown is two-phase, as in the threaded worker: quiet (stop fetching, give back unstarted
jobs), then stop with a deadline, after which unfinished jobs are requeued.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from conveyor.clock import SYSTEM_CLOCK
from conveyor.core.aio_finisher import AioFinisher
from conveyor.core.aio_processor import AioProcessor, ThreadPool, ready
from conveyor.core.execution import is_async, loop_factory
from conveyor.core.fetch import BLOCK_MULTI, BLOCK_SINGLE, GATED_WAIT, Fetch, Fetched
from conveyor.core.finisher import Counters
from conveyor.core.health import MAX_BACKOFF, Health, Unhealthy, run_loop
from conveyor.core.housekeeping import BusyMap, Heartbeat, Housekeeper, Periodic
from conveyor.core.middleware import FetchedJob
from conveyor.core.processor import ProcessorHost, run_batch_hook, run_stop_hooks
from conveyor.core.units import (
    MAX_BATCH,
    LimitBackoff,
    Units,
    moving_average,
    refill_for,
    resize_due,
    resized,
    slot_ceiling,
)
from conveyor.core.worker import WEDGE_AFTER, make_identity
from conveyor.redis.aio_store import AioStore, holding_own_client

if TYPE_CHECKING:
    from conveyor.core.job import Job

log = logging.getLogger("conveyor.worker")


class AioWorker(Unhealthy):
    """Runs jobs from the app's queues on one event loop until stopped.

    >>> AioWorker(app).run()      # doctest: +SKIP  (blocks; TERM/INT stop it, TSTP quiets it)
    """

    def __init__(
        self, app: ProcessorHost, *, burst: bool = False, identity: str | None = None
    ) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.burst = burst
        self.identity = identity or make_identity()
        self.processor = AioProcessor(app, identity=self.identity)
        self.counters = Counters()
        self.started_at = app.clock.time()
        self._adaptive = self.settings.prefetch is None
        self._backoff = LimitBackoff(SYSTEM_CLOCK)
        self._fetched = 0  # jobs fetched so far (LimitBackoff counts in them)
        self._measures = 0
        self._avg_run = -1.0  # seconds per job (moving average); negative: none measured yet
        self._set_limit(self.settings.effective_prefetch)
        self._busy: BusyMap = {}
        self._inflight = 0
        self._quiet = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._threads_stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rng = random.Random()
        self._async_cache: dict[type[Job], bool] = {}
        self.fetch = Fetch(app, self.identity, rng=self._rng)
        self._heartbeat = Heartbeat(app, self.identity, started_at=self.started_at)
        # The process list shows how each process runs its jobs.
        self._heartbeat.info = json.dumps({**json.loads(self._heartbeat.info), "mode": "asyncio"})
        #: Non-zero once the process must exit unhealthy (see :data:`EXIT_UNHEALTHY`).
        self.exit_code = 0
        #: Why this mode, for the start line (``worker_mode=auto``).
        self.mode_note = ""
        # Loop health and the payloads this process holds (for reconciling its own working
        # list after a lost fetch reply), measured in real time as in the threaded worker.
        # The start boundary rides on the acknowledgements (conveyor.core.aio_gate): a crash
        # counts an interruption only for the jobs that had started, and a suspect (a job
        # interrupted before) runs alone (docs/reliability.md).
        self.health = Health(SYSTEM_CLOCK)
        self.held = Units(
            self.limit, self.refill, concurrency=self.settings.concurrency, clock=SYSTEM_CLOCK
        )
        self.housekeeper = Housekeeper(
            app,
            self.identity,
            units=self.held,
            health=self.health,
            stopping=self._stop,
            rng=self._rng,
        )
        self._beat_count = 0

    def _set_limit(self, prefetch: int) -> None:
        self.limit = self.settings.concurrency + prefetch
        # Fetch only once this many slots are free, so jobs come in batches (as in threads).
        self.refill = refill_for(self.limit, self.settings.concurrency)

    def _measured(self, seconds: float) -> None:
        """Fold one job's run time into the average and resize the prefetch to it: up at once,
        down only when jobs got several times slower (a pause of the machine must not make
        it hand jobs back and forth), and then the prefetched jobs beyond the new size go
        back to their queue at once."""
        self._avg_run = moving_average(self._avg_run, seconds)
        if not self._adaptive:
            return
        self._measures += 1
        if not resize_due(self._measures, self._avg_run):
            return
        concurrency = self.settings.concurrency
        current = self.limit - concurrency
        prefetch = resized(
            self._avg_run,
            current,
            concurrency=concurrency,
            floor=self.settings.effective_prefetch,
            floor_until=self._backoff.until,
            clock=SYSTEM_CLOCK,
        )
        if prefetch is None or (prefetch := self._backoff.capped(prefetch)) == current:
            return
        self._set_limit(prefetch)
        if prefetch < current and self._units.qsize() > prefetch:
            self._give_back(keep=prefetch)

    # -- lifecycle (any thread) -----------------------------------------------------------------
    def run(self, install_signals: bool = True) -> None:
        """Run until stopped (signal, Redis signal, :meth:`stop` or burst end); blocks."""
        factory = loop_factory(self.settings.event_loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(self.run_async(install_signals=install_signals))
        if self.exit_code:
            raise SystemExit(self.exit_code)

    def quiet(self) -> None:
        """Stop fetching new jobs; running jobs finish. Unstarted prefetched jobs go back."""
        if not self._quiet.is_set():
            log.info("worker %s quieting", self.identity)
            self._quiet.set()
            self._poke()

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (returns at once)."""
        self._stop.set()
        self.quiet()
        self._poke()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the worker has fully shut down."""
        return self._done.wait(timeout)

    @property
    def busy(self) -> int:
        return len(self._busy)

    def _poke(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The loop may close meanwhile: then there is nothing left to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._freed.set()
        if self._stop.is_set():
            self._gate.stop()

    # -- the loop -------------------------------------------------------------------------------
    async def run_async(self, *, install_signals: bool = False) -> None:
        """The worker on the running event loop (``run`` wraps it in ``asyncio.run``)."""
        loop = self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._freed = asyncio.Event()
        self._units: asyncio.Queue[FetchedJob | None] = asyncio.Queue()
        self._pool = ThreadPool(loop, self.settings.concurrency)
        # The store this process serves (Settings.store), as app.store is.
        client = self.app.stores.connect_async(self.settings.store)
        self.astore = AioStore(client, self.store.keys)
        self.finisher = AioFinisher(
            self.app,
            self.identity,
            self.astore,
            held=self.held,
            counters=self.counters,
            health=self.health,
            refill=lambda: self.refill,
            wedge_after=WEDGE_AFTER,
        )
        self._gate = self.finisher.gate
        if install_signals and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
            loop.add_signal_handler(signal.SIGTSTP, self.quiet)
        # The liveness key must exist before anything enters our working list, or a sweep
        # elsewhere could take our jobs for orphans.
        self.heartbeat()
        threads = [
            self._thread_loop(
                "heartbeat",
                0,
                self._beat_step,
                self._threads_stop,
                max_backoff=self.settings.heartbeat_interval / 2,
            ),
            self._thread_loop(
                "housekeeping", WEDGE_AFTER * 5, self.housekeeper.step, self._threads_stop
            ),
        ]
        if self.app.periodic_tasks:
            periodic = Periodic(self.app, self._rng)
            threads.append(
                self._thread_loop("periodic", WEDGE_AFTER * 10, periodic.step, self._stop)
            )
        pool = self.astore.client.connection_pool  # each slot's own client (app.aredis())
        slots = [
            asyncio.create_task(holding_own_client(pool, self._slot(f"aio{i}")))
            for i in range(self.settings.concurrency)
        ]
        finisher = asyncio.create_task(self.finisher.run())
        fetcher = asyncio.create_task(self._fetch_loop())
        log.info(
            "worker %s started (asyncio): %d slots, queues %s%s",
            self.identity,
            self.settings.concurrency,
            ",".join(self.settings.queue_names),
            self.mode_note,
        )
        try:
            while not self._stop.is_set():
                self._changed.clear()
                await self._changed.wait()
            await self._shutdown(fetcher, slots, finisher, threads)
        finally:
            if install_signals and threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTSTP):
                    loop.remove_signal_handler(signum)
            self._done.set()

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def _thread_loop(
        self,
        name: str,
        bound: float,
        step: Callable[[threading.Event], bool],
        stop: threading.Event,
        *,
        max_backoff: float = MAX_BACKOFF,
    ) -> threading.Thread:
        """A housekeeping loop in its own thread that survives what it meets (as the threaded
        worker's, :func:`conveyor.core.health.run_loop`)."""
        state = self.health.register(name, bound, max_backoff=max_backoff)
        return self._spawn(
            lambda: run_loop(self.health, state, lambda: step(stop), stop, self.fatal),
            f"conveyor-{name}",
        )

    async def _shutdown(
        self,
        fetcher: asyncio.Task[None],
        slots: list[asyncio.Task[None]],
        finisher: asyncio.Task[None],
        threads: list[threading.Thread],
    ) -> None:
        clock = self.app.clock
        deadline = clock.monotonic() + self.settings.shutdown_timeout
        await fetcher  # returns within one blocking fetch, having given back unstarted jobs
        for _ in slots:
            self._units.put_nowait(None)
        _, pending = await asyncio.wait(slots, timeout=max(0.0, deadline - clock.monotonic()))
        left = list(self._busy.values())  # before cancelling: what is still running now
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # Acknowledge what finished before giving back what did not, so a finished job is
        # never requeued.
        self.finisher.finish()
        await finisher
        if left:
            moved = self._requeue([(q, raw) for q, raw, _ in left])
            log.warning(
                "worker %s: %d job(s) still running at the %.0fs deadline were requeued",
                self.identity,
                moved,
                self.settings.shutdown_timeout,
            )
        # No heartbeat may follow the unregistering, or the process would reappear for 60 s.
        self._threads_stop.set()
        for thread in threads:
            thread.join(timeout=30)
        await asyncio.to_thread(run_stop_hooks, self.app, self.identity)
        try:
            remaining = self.store.unregister(self.identity)
            if remaining:
                log.warning("%d job(s) left in the working list will be recovered", remaining)
        except redis.RedisError as exc:
            log.error("could not unregister %s: %s", self.identity, exc)
        self._pool.close()
        await self.astore.close()
        await self.app.stores.aclose()  # clients jobs made on this loop (app.async_store())
        log.info(
            "worker %s stopped: %d processed, %d failed",
            self.identity,
            self.counters.processed,
            self.counters.failed,
        )

    def _requeue(self, jobs: list[Fetched]) -> int:
        # Off the hot path (quiet, shutdown): the synchronous store, as the threaded worker.
        moved = self.fetch.give_back(jobs)
        self.held.release_held(raw for _, raw in jobs)
        self.counters.requeued += moved
        return moved

    # -- fetching -------------------------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        state = self.health.register("fetch", WEDGE_AFTER)
        failures = 0
        while not self._quiet.is_set():
            self.health.progress(state)
            while self._inflight > self.limit - self.refill and not self._quiet.is_set():
                self._freed.clear()
                await self._freed.wait()
            if self._quiet.is_set():
                break
            order = self.fetch.order()
            if not order:  # every queue gated shut: look again shortly
                await asyncio.sleep(GATED_WAIT)
                continue
            try:
                jobs = await self._fetch(order, min(self.limit - self._inflight, MAX_BATCH))
                failures = 0
            except Exception as exc:  # never let the fetch loop die: back off and carry on
                failures += 1
                delay = self.health.failed(state, exc)
                await asyncio.sleep(delay)
                continue
            if jobs is None:
                log.info("burst: queues empty, stopping")
                self.stop()
                break
            if jobs and self._quiet.is_set():  # quieted while we waited: hand them back
                self._requeue(jobs)
                break
            if jobs:
                await self._dispatch([self.processor.fetched(q, raw) for q, raw in jobs])
                self._gate.request()  # Redis should know its jobs as not started
        self._return_unstarted()

    async def _fetch(self, order: list[str], count: int) -> list[tuple[str, str]] | None:
        """Jobs to dispatch (maybe none); ``None`` when a burst worker is done."""
        with self.held.fetching():  # until its reply is held, its jobs are not orphans
            jobs = await self.astore.fetch(self.identity, order, count)
            self.held.hold(raw for _, raw in jobs)
        if jobs:
            return jobs
        if self.burst:
            if self._inflight or self.finisher.outcomes:
                await asyncio.sleep(0.01)
                return []
            # Nothing runs now, so what a job enqueued just before it finished is visible.
            with self.held.fetching():
                jobs = await self.astore.fetch(self.identity, order, count)
                self.held.hold(raw for _, raw in jobs)
            return jobs or None
        block = BLOCK_SINGLE if len(order) == 1 else BLOCK_MULTI
        with self.held.fetching():
            raw = await self.astore.fetch_blocking(self.identity, order[0], block)
            if raw is not None:
                self.held.hold([raw])
        return [(order[0], raw)] if raw is not None else []

    async def _dispatch(self, units: list[FetchedJob]) -> None:
        processor = self.processor
        if any(u.job_class is not None and processor.chain_for(u.job_class) for u in units):
            # Middleware prepare the batch on the synchronous store (dedup cookies, concurrency
            # slots: a round trip), in a thread, so the loop runs jobs meanwhile.
            await asyncio.to_thread(run_batch_hook, self.app, "prepare_batch", units)
        self._fetched += len(units)
        pinned = False  # a job took a scarce shared slot ahead, or was handed off (deferred)
        for unit in units:
            if unit.handed_off is None:
                self._inflight += 1
                self._gate.added(unit)
                self._units.put_nowait(unit)
                pinned = pinned or unit.holds_slot
            else:  # a middleware moved it out of the working list itself
                self.held.release_held([unit.raw])
                self._gate.added(None)
                pinned = True
        if self._adaptive:  # its own jobs must not fill a concurrency limit
            cap = slot_ceiling(
                self._backoff,
                units,
                concurrency=self.settings.concurrency,
                floor=self.settings.effective_prefetch,
            )
            if cap is not None and self.limit - self.settings.concurrency > cap:
                self._set_limit(cap)
        if pinned and self._adaptive:  # holding more takes what running jobs need
            current = self.limit - self.settings.concurrency
            prefetch = self._backoff.met(
                current, floor=self.settings.effective_prefetch, fetched=self._fetched
            )
            if prefetch < current:
                self._set_limit(prefetch)
                if self._units.qsize() > prefetch:
                    self._give_back(keep=prefetch)

    def _return_unstarted(self) -> None:
        self._give_back(keep=0)

    def _take_waiting(self, keep: Callable[[int, FetchedJob], bool]) -> list[FetchedJob]:
        """Take out of their queue the jobs waiting for a slot that ``keep(index, job)`` does
        not keep (in order)."""
        queued = [self._units.get_nowait() for _ in range(self._units.qsize())]
        jobs = [u for u in queued if u is not None]
        back = [u for i, u in enumerate(jobs) if not keep(i, u)]
        gone = {id(u) for u in back}
        stops = [None] * (len(queued) - len(jobs))  # end-of-work markers stay, after the jobs
        for unit in [*(u for u in jobs if id(u) not in gone), *stops]:
            self._units.put_nowait(unit)
        return back

    def _give_back(self, keep: int) -> None:
        """Requeue the fetched jobs no slot has started, but for the ``keep`` oldest."""
        back = self._take_waiting(lambda i, _: i < keep)
        for unit in back:
            self._gate.dropped(unit)
        if back:
            run_batch_hook(self.app, "abandon_batch", back)
            self._requeue([(u.queue, u.raw) for u in back])
            self._inflight -= len(back)

    # -- running --------------------------------------------------------------------------------
    async def _slot(self, tid: str) -> None:
        units = self._units
        while True:
            # A job already waiting is taken without a coroutine (the hot path under load).
            unit = units.get_nowait() if units.qsize() else await units.get()
            if unit is None:
                return
            gate = self._gate
            seq = gate.seq(unit)
            if gate.slow(seq, unit):
                verdict = await gate.admit(seq, unit)
                if verdict != "start":
                    self._inflight -= 1
                    if verdict == "back":  # the worker is stopping: it goes back unstarted
                        self._requeue([(unit.queue, unit.raw)])
                    else:  # recovered elsewhere while this process was taken for dead
                        self.held.release_held([unit.raw])
                    self._freed.set()
                    continue
            gate.started(unit)
            started = time.perf_counter()
            self._busy[tid] = (unit.queue, unit.raw, int(self.app.clock.time()))
            try:
                outcome = await self._execute(unit)
            except asyncio.CancelledError:  # the shutdown deadline: requeued by _shutdown
                raise
            except BaseException as exc:  # a bug in Conveyor or a hook: file it, never strand it
                log.exception("processor crashed on a job from %s; filing it as dead", unit.queue)
                self.finisher.add(self.processor.crashed(unit, exc), unit)
            else:
                self.finisher.add(outcome, unit)
            finally:
                self._busy.pop(tid, None)
                seconds = time.perf_counter() - started
                self._measured(seconds)
                self._inflight -= 1
                if self._inflight <= self.limit - self.refill:  # only then can the fetch go on
                    self._freed.set()
            gate.finished(seq, seconds)

    def _execute(self, unit: FetchedJob) -> Any:
        """An awaitable outcome: on this loop for ``async def`` jobs, else in a thread."""
        job_class = unit.job_class
        if unit.job is None or job_class is None:  # filed as malformed or unknown, no I/O
            return ready(self.processor.process(unit))
        asynchronous = self._async_cache.get(job_class)
        if asynchronous is None:
            asynchronous = self._async_cache[job_class] = is_async(job_class.perform)
            if not asynchronous:
                log.info("%s is not async def: it runs in a thread", job_class.__qualname__)
        if asynchronous:
            return self.processor.process_async(unit)
        return self._pool.run(self.processor.process, unit)

    def _after_beat(self, entries: list[str] | None, until: float) -> None:
        """On the loop, after a heartbeat: drop the jobs recovered elsewhere (``entries``: the
        working list, when the liveness key had expired), then let jobs start until ``until``."""
        if entries is not None:
            gone = self._gate.revoke(entries)
            ids = {id(u) for u in gone}
            # Slots that took one of them drop it themselves (StartGate.admit says "drop").
            for unit in self._take_waiting(lambda _, u: id(u) not in ids):
                self._gate.dropped(unit)
                self.held.release_held([unit.raw])
                self._inflight -= 1
            self._freed.set()
            log.warning(
                "worker %s was taken for dead; %d fetched job(s) recovered elsewhere dropped",
                self.identity,
                len(gone),
            )
        self._gate.alive_until(until)

    # -- housekeeping (threads, synchronous store) ----------------------------------------------
    def heartbeat(self) -> None:
        """Publish this process (busy slots, quiet state, loop health) and act on a Redis
        signal. Past the liveness TTL without a heartbeat no job starts; a heartbeat that finds
        the liveness key gone drops the jobs recovered elsewhere meanwhile."""
        sent = SYSTEM_CLOCK.monotonic()
        sig, alive = self._heartbeat.beat(
            self._busy, quiet=self._quiet.is_set(), health=self.health.report()
        )
        self._beat_count += 1
        entries = None
        if not alive and self._beat_count > 1:
            # Our liveness key had expired (SIGSTOP, a long pause): another process may have
            # recovered our jobs. Those not started here must not run a second time.
            entries = self.store.working_jobs(self.identity)
        # The key lives liveness_ttl from when Redis ran the script, which is after ``sent``.
        until = sent + self.settings.liveness_ttl
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._after_beat, entries, until)
        if sig == "TSTP":
            self.quiet()
        elif sig == "TERM":
            self.stop()


__all__ = ["AioProcessor", "AioWorker"]
