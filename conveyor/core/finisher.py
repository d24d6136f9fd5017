"""Batched acknowledgement (SPEC CORE-3, CORE-5): finished jobs leave the working list, with
their retry or dead-set entry and the stat counters, in one Lua call per batch. The same call
publishes the process's start boundary (:mod:`conveyor.core.units`)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from conveyor.core.middleware import FetchedJob
from conveyor.core.processor import ProcessorHost, settle, utc_day
from conveyor.core.recovery import log_trimmed
from conveyor.core.units import SHORT_JOB, Units
from conveyor.redis import Outcome, Store
from conveyor.redis.scripts import ScriptCall

log = logging.getLogger("conveyor.worker")

#: Attempts to acknowledge the last batch at shutdown before leaving it to recovery.
FINAL_ATTEMPTS = 10
#: An acknowledgement waits up to this long for more finished jobs to share its round trip
#: (unless a refill's worth are waiting, or a thread waits for a permit): a crash re-runs at
#: most this much finished work, within at-least-once delivery.
ACK_WINDOW = 0.005


@dataclass
class Counters:
    """What one worker process did (shown in its logs and the tests)."""

    processed: int = 0
    failed: int = 0
    requeued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, outcomes: list[Outcome]) -> None:
        """Count acknowledged outcomes: every one but a hand-off is processed; every one but
        a success or a hand-off failed."""
        failed = sum(1 for o in outcomes if o.kind not in ("ok", "gone"))
        processed = sum(1 for o in outcomes if o.kind != "gone")
        with self.lock:
            self.processed += processed
            self.failed += failed


class Finisher:
    """Collects outcomes from the worker threads and acknowledges them in batches.

    >>> finisher = Finisher(app, "host:1:abc", Counters(), units)   # doctest: +SKIP
    >>> finisher.add(Outcome("ok", raw), unit)                      # doctest: +SKIP
    >>> finisher.flush()                                            # doctest: +SKIP
    """

    def __init__(
        self,
        app: ProcessorHost,
        identity: str,
        counters: Counters,
        units: Units,
        *,
        store: Store | None = None,
    ) -> None:
        self.app = app
        self.identity = identity
        self.counters = counters
        self.units = units
        self.store = store or app.store
        self._outcomes: list[tuple[Outcome, FetchedJob]] = []
        self._short = False
        #: An outcome waiting frees a shared resource (FetchedJob.holds_slot): no window.
        self._soon = False
        self._cond = threading.Condition()
        #: Outcomes waiting at which :meth:`add` wakes the finisher (1 while it idles, a
        #: refill's worth during the acknowledgement window, never while it acknowledges):
        #: a worker thread rarely pays a wake-up.
        self._wake_at = 1 << 62
        units.on_wanted = self.wake

    def add(self, outcome: Outcome, unit: FetchedJob, seconds: float = 1.0) -> None:
        """Queue the outcome of a job that ran ``seconds``."""
        with self._cond:
            outcomes = self._outcomes
            outcomes.append((outcome, unit))
            if seconds < SHORT_JOB:
                self._short = True
            if unit.holds_slot and not self._soon:
                self._soon = True
                self._wake_at = 1
            if len(outcomes) >= self._wake_at:
                self._wake_at = 1 << 62
                self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def step(self, stop: threading.Event) -> bool:
        """Wait for outcomes (or a thread waiting to start), then for up to
        :data:`ACK_WINDOW` for more to share the round trip, then acknowledge them."""
        units = self.units
        with self._cond:
            if not self._outcomes and not units.wanted and not stop.is_set():
                self._wake_at = 1
                self._cond.wait(0.5)
            if self._outcomes and not units.wanted and not stop.is_set() and not self._soon:
                enough = units.refill
                if len(self._outcomes) < enough:
                    self._wake_at = enough
                    self._cond.wait(ACK_WINDOW)
            self._wake_at = 1 << 62
        self.flush()
        return True

    def flush(self, final: bool = False) -> None:
        """Acknowledge everything collected so far (one attempt; at shutdown, ``final``, up to
        :data:`FINAL_ATTEMPTS`). A failed attempt keeps the batch for the next one."""
        with self._cond:
            batch, self._outcomes = self._outcomes, []
            short, self._short = self._short, False
            self._soon = False
        if not batch and not self.units.wanted:
            return
        attempts = 3 if final else 1
        riders = settle(self.app, [u for _, u in batch], attempts=attempts)
        for attempt in range(FINAL_ATTEMPTS if final else 1):
            try:
                self._acknowledge(batch, short, riders, attempts)
                break
            except Exception as exc:
                if not final:
                    with self._cond:
                        self._outcomes[:0] = batch
                        self._short = self._short or short
                    raise
                log.error("acknowledging %d job(s) failed (%s); retrying", len(batch), exc)
                self.app.clock.sleep(min(5.0, 0.1 * 2**attempt))
        self.counters.count([outcome for outcome, _ in batch])

    def _acknowledge(
        self,
        batch: list[tuple[Outcome, FetchedJob]],
        short: bool,
        riders: list[ScriptCall],
        attempts: int,
    ) -> None:
        """One acknowledgement call for ``batch`` (extended in place by the jobs that finished
        after it was taken, with their ``riders``), publishing the start boundary."""
        app, settings = self.app, self.app.settings
        now = app.clock.time()
        with self.units.publishing() as publication:
            # Permits ahead for twice as many jobs as just finished (their threads take the
            # next jobs now), or for every waiting job when jobs are short (see SHORT_JOB).
            if batch:
                self.units.eager = short
            slack = self.units.limit if short else 2 * len(batch)
            boundary = publication.for_finish(slack=slack)
            # Jobs that finished since the batch was taken ride along. A suspect handed out
            # once they finished may be permitted by this boundary, and must not start while
            # they are unacknowledged: its crash would count them as interrupted again.
            with self._cond:
                late, self._outcomes = self._outcomes, []
            if late:
                riders += settle(app, [u for _, u in late], attempts=attempts)
                batch += late
            outcomes = [outcome for outcome, _ in batch]
            _, trimmed = self.store.finish(
                self.identity,
                outcomes,
                utc_day(now),
                settings.dead_max_jobs,
                now - settings.dead_timeout,
                boundary=boundary,
                riders=riders,
            )
        self.units.release_held(o.raw for o in outcomes)
        log_trimmed(trimmed)
