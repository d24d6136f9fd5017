"""Reliable fetch (SPEC CORE-3): which queue to look at first, moving jobs atomically from the
queues into this process's working list, and handing unstarted jobs back.

:class:`Fetch` is the Redis side (no thread of its own, so the threaded worker and an asyncio
worker can share it); :class:`~conveyor.core.units.Units` holds the fetched jobs waiting for
a thread; :class:`Fetcher` is the loop a worker thread runs.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence

import redis

from conveyor.core.middleware import FetchedJob
from conveyor.core.processor import Processor, ProcessorHost, run_batch_hook
from conveyor.core.units import MAX_BATCH, Units
from conveyor.redis import Store

log = logging.getLogger("conveyor.worker")

#: How long the fetcher blocks on an empty queue before looking again.
BLOCK_SINGLE = 1.0
BLOCK_MULTI = 0.25
#: How often a worker whose queues are all gated shut looks again.
GATED_WAIT = 0.2

#: A fetched job as Redis gave it: (queue name, payload as fetched).
Fetched = tuple[str, str]


def gate_open(gates: Mapping[str, Callable[[], bool]], queue: str) -> bool:
    """Whether ``queue``'s gate (if any) lets the worker fetch from it; a gate that raises
    counts as open, so a bug in a gate can stall nothing.

    >>> gate_open({"tasks": lambda: False}, "tasks"), gate_open({}, "other")
    (False, True)
    """
    gate = gates.get(queue)
    if gate is None:
        return True
    try:
        return bool(gate())
    except Exception:
        log.exception("queue gate of %s failed; treating the queue as open", queue)
        return True


def queue_order(
    queues: Sequence[tuple[str, int]],
    gates: Mapping[str, Callable[[], bool]],
    *,
    strict: bool,
    rng: random.Random,
) -> list[str]:
    """The queues to try this time, open gates only: in the given order when ``strict``, else
    in weighted random order as Sidekiq does (a queue of weight 3 comes first 3x as often).

    >>> queue_order([("a", 1), ("b", 1)], {}, strict=True, rng=random.Random(0))
    ['a', 'b']
    """
    if gates:
        queues = [(name, w) for name, w in queues if gate_open(gates, name)]
    if strict or len(queues) <= 1:
        return [name for name, _ in queues]
    pool = [name for name, weight in queues for _ in range(weight)]
    rng.shuffle(pool)
    return list(dict.fromkeys(pool))


class Fetch:
    """The Redis side of fetching for one process identity.

    >>> fetch = Fetch(app, "host:1:abc")                      # doctest: +SKIP
    >>> fetch.batch(fetch.order(), 10)                        # doctest: +SKIP
    [('default', '{"class":"HardWorker",...}')]
    """

    def __init__(
        self,
        app: ProcessorHost,
        identity: str,
        *,
        rng: random.Random | None = None,
        store: Store | None = None,
    ) -> None:
        self.app = app
        self.identity = identity
        self.rng = rng or random.Random()
        self.store = store or app.store

    def order(self) -> list[str]:
        settings = self.app.settings
        return queue_order(
            settings.queues, self.app.queue_gates, strict=settings.strict_order, rng=self.rng
        )

    def batch(self, order: Sequence[str], count: int) -> list[Fetched]:
        """Move up to ``count`` jobs (queues tried in ``order``) into the working list."""
        return self.store.fetch(self.identity, order, min(count, MAX_BATCH))

    def blocking(self, order: Sequence[str]) -> list[Fetched]:
        """Wait briefly for one job on the first queue (atomic BLMOVE)."""
        block = BLOCK_SINGLE if len(order) == 1 else BLOCK_MULTI
        raw = self.store.fetch_blocking(self.identity, order[0], block)
        return [(order[0], raw)] if raw is not None else []

    def give_back(self, jobs: Sequence[Fetched], attempts: int = 5) -> int:
        """Put unstarted jobs back at the front of their queues; returns how many moved. After
        ``attempts`` Redis failures they stay in the working list, recovered like orphans."""
        clock = self.app.clock
        for attempt in range(attempts):
            try:
                return self.store.requeue(self.identity, list(jobs))
            except redis.RedisError as exc:
                log.error("requeue failed (%s); retrying", exc)
                clock.sleep(0.2 * (attempt + 1))
        return 0


class Fetcher:
    """The fetch loop of one worker process: refill :class:`Units` in batches until quiet.

    After each batch it asks the finisher to publish the start boundary, so the jobs of the
    batch that wait for a thread are soon known in Redis as not started."""

    def __init__(
        self,
        fetch: Fetch,
        units: Units,
        processor: Processor,
        *,
        quiet: threading.Event,
        on_burst_end: Callable[[], None],
        burst: bool = False,
    ) -> None:
        self.fetch = fetch
        self.units = units
        self.processor = processor
        self.quiet = quiet
        self.on_burst_end = on_burst_end
        self.burst = burst
        self.requeued = 0

    def step(self) -> bool:
        """One round: wait for room, fetch, dispatch. False once the fetcher should end."""
        if self.quiet.is_set():
            return False
        surplus = self.units.surplus() if self.units.adaptive else []
        if surplus:  # jobs turned slow: the prefetched ones beyond the new size go back
            run_batch_hook(self.fetch.app, "abandon_batch", surplus)
            self.give_back(surplus)
        free = self.units.room(self.quiet)
        if free is None or self.quiet.is_set():
            return not self.quiet.is_set()
        order = self.fetch.order()
        if not order:  # every queue gated shut: look again shortly
            self.quiet.wait(GATED_WAIT)
            return True
        jobs = self._next(order, free)
        if jobs is None:
            log.info("burst: queues empty, stopping")
            self.on_burst_end()
            return False
        if jobs and self.quiet.is_set():  # quieted while we were blocked: hand them back
            self.requeued += self.fetch.give_back(jobs)
            self.units.release_held(raw for _, raw in jobs)
            return False
        if jobs:
            self.dispatch(jobs)
        return True

    def _next(self, order: list[str], free: int) -> list[Fetched] | None:
        """The next jobs; ``None`` when a burst worker should stop."""
        jobs = self._batch(order, free)
        if jobs:
            return jobs
        if self.burst:
            return self._burst_check(order, free)
        with self.units.fetching():
            jobs = self.fetch.blocking(order)
            self.units.hold(raw for _, raw in jobs)
        return jobs

    def _batch(self, order: list[str], free: int) -> list[Fetched]:
        with self.units.fetching():
            jobs = self.fetch.batch(order, free)
            self.units.hold(raw for _, raw in jobs)
        return jobs

    def _burst_check(self, order: list[str], free: int) -> list[Fetched] | None:
        """Burst mode, nothing fetched: ``None`` once the queues are empty while no job runs,
        else the jobs to dispatch (none yet while jobs still run)."""
        if not self.units.idle():
            self.quiet.wait(0.01)  # a real wait: a test's fake clock must not spin here
            return []
        # Nothing runs now, so what a job enqueued just before it finished is visible (the
        # fetch above may have run before that push): look once more before stopping.
        return self._batch(order, free) or None

    def dispatch(self, jobs: list[Fetched]) -> None:
        units = [self.processor.fetched(q, raw) for q, raw in jobs]
        # Middleware do their Redis work for the whole batch first (one round trip each); a job
        # they hand off (e.g. deferred by a concurrency limit) already left the working list.
        run_batch_hook(self.fetch.app, "prepare_batch", units)
        gone = [u.raw for u in units if u.handed_off is not None]
        if gone:
            self.units.release_held(gone)
        self.units.add([u if u.handed_off is None else None for u in units])
        self.units.request()

    def return_unstarted(self) -> None:
        """Give back every fetched job no thread has started (quiet, shutdown)."""
        unstarted = self.units.drain()
        if unstarted:
            run_batch_hook(self.fetch.app, "abandon_batch", unstarted)
            self.give_back(unstarted)

    def give_back(self, units: Sequence[FetchedJob]) -> int:
        moved = self.fetch.give_back([(u.queue, u.raw) for u in units])
        # Held no longer: given back, or (Redis failing) left for the reconciliation.
        self.units.release_held(u.raw for u in units)
        self.requeued += moved
        return moved
