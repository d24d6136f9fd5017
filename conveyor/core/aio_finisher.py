"""Acknowledgements of an asyncio worker (:mod:`conveyor.core.aio_worker`): the finish task
acknowledges whatever finished since its last round trip in one ``finish.lua`` call, and each
acknowledgement publishes the start boundary the start gate captures
(:mod:`conveyor.core.aio_gate`). The asyncio
counterpart of :mod:`conveyor.core.finisher`, on the same script and outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis

from conveyor.core.aio_gate import EVERY_JOB, StartGate
from conveyor.core.finisher import Counters
from conveyor.core.health import Health
from conveyor.core.middleware import FetchedJob
from conveyor.core.processor import ProcessorHost, settle, utc_day
from conveyor.core.recovery import log_trimmed
from conveyor.core.units import Units
from conveyor.redis import Outcome
from conveyor.redis.aio_store import AioStore

log = logging.getLogger("conveyor.worker")

#: An acknowledgement waits this long for more finished jobs to share its round trip (unless
#: half a fetch's worth are waiting already): a crash re-runs at most this much finished work.
ACK_WINDOW = 0.002


class AioFinisher:
    """Collects the outcomes of an asyncio worker's jobs and acknowledges them in batches.
    Made on the worker's event loop; ``refill`` says how many outcomes make a batch worth
    sending at once (the worker's prefetch changes it).

    >>> finisher = AioFinisher(app, identity, astore, held=held, counters=counters,
    ...     health=health, refill=lambda: 10, wedge_after=60.0)  # doctest: +SKIP
    >>> finisher.add(outcome, unit); await finisher.run()         # doctest: +SKIP
    """

    def __init__(
        self,
        app: ProcessorHost,
        identity: str,
        astore: AioStore,
        *,
        held: Units,
        counters: Counters,
        health: Health,
        refill: Callable[[], int],
        wedge_after: float,
    ) -> None:
        self.app = app
        self.identity = identity
        self.astore = astore
        self.held = held
        self.counters = counters
        self.health = health
        self.refill = refill
        self.wedge_after = wedge_after
        self.outcomes: list[tuple[Outcome, FetchedJob]] = []
        #: Captures the start boundary each acknowledgement publishes.
        self.gate = StartGate(self.publish)
        self.gate.on_wanted = self._wanted
        self.finishing = False
        self._has_outcomes = asyncio.Event()
        self._lock = asyncio.Lock()  # one finish call at a time on the finish connection

    def add(self, outcome: Outcome, unit: FetchedJob) -> None:
        self.outcomes.append((outcome, unit))
        self._has_outcomes.set()

    def finish(self) -> None:
        """Acknowledge what is left, then let :meth:`run` return (shutdown)."""
        self.finishing = True
        self._has_outcomes.set()

    def _wanted(self) -> None:
        self._has_outcomes.set()

    async def publish(self) -> None:
        """Acknowledge what finished and publish the start boundary, until Redis took it: a
        suspect never starts before the jobs behind it are named."""
        for attempt in range(1_000_000):
            try:
                await self.flush(final=False, publish=True)
                return
            except Exception:  # the outcomes are kept by flush; try again
                log.exception("publishing the start boundary failed; retrying")
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))

    async def run(self) -> None:
        # Whatever finished while the previous acknowledgement was in flight goes in the next
        # one, so under load one finish.lua call covers many jobs.
        state = self.health.register("finish", self.wedge_after)
        while True:
            self.health.progress(state)
            with contextlib.suppress(TimeoutError):  # idle: still alive, for wedge detection
                await asyncio.wait_for(self._has_outcomes.wait(), 0.5)
            if not self._has_outcomes.is_set():
                continue
            outcomes = self.outcomes
            if (
                not self.finishing
                and not self.gate.wanted
                and len(outcomes) < self.refill()
                and not any(u.holds_slot for _, u in outcomes)
            ):
                await asyncio.sleep(ACK_WINDOW)
            self._has_outcomes.clear()
            try:
                await self.flush(final=self.finishing)
            except Exception as exc:  # never let the finisher die: the batch is kept, retried
                self._has_outcomes.set()
                await asyncio.sleep(self.health.failed(state, exc))
                continue
            if self.finishing and not self.outcomes:
                return

    async def flush(self, final: bool, publish: bool = False) -> None:
        async with self._lock:
            await self._flush_locked(final, publish)

    async def _flush_locked(self, final: bool, publish: bool) -> None:
        batch, self.outcomes = self.outcomes, []
        gate = self.gate
        if not batch and not publish and not gate.wanted:
            return
        if batch:
            gate.eager, gate.short = gate.short, False
        # Permits ahead for twice as many jobs as just finished (their slots take the next
        # jobs now), or for every waiting job while jobs are short.
        slack = EVERY_JOB if gate.eager else 2 * len(batch)
        app, settings = self.app, self.app.settings
        attempts = 10 if final else 1_000_000
        riders = settle(app, [u for _, u in batch], attempts=attempts)
        outcomes = [outcome for outcome, _ in batch]
        for attempt in range(attempts):
            now = app.clock.time()
            seq, boundary = gate.capture(slack)
            try:
                _, trimmed = await self.astore.finish(
                    self.identity,
                    outcomes,
                    utc_day(now),
                    settings.dead_max_jobs,
                    now - settings.dead_timeout,
                    boundary=boundary,
                    riders=riders,
                )
                gate.confirm(seq)
                self.held.release_held(o.raw for o in outcomes)
                log_trimmed(trimmed)
                break
            except redis.RedisError as exc:
                gate.failed()
                log.error("acknowledging %d job(s) failed (%s); retrying", len(outcomes), exc)
                await asyncio.sleep(min(5.0, 0.1 * 2**attempt))
            except Exception:
                gate.failed()
                self.outcomes[:0] = batch  # kept for the next attempt, never dropped
                raise
        self.counters.count(outcomes)
