"""Batched acknowledgement (SPEC CORE-3, CORE-5): finished jobs leave the working list, with
their retry or dead-set entry and the stat counters, in one Lua call per batch."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import redis

from conveyor.core.middleware import FetchedJob
from conveyor.core.processor import ProcessorHost, run_batch_hook, utc_day
from conveyor.redis import Outcome

log = logging.getLogger("conveyor.worker")


@dataclass
class Counters:
    """What one worker process did (shown in its logs and the tests)."""

    processed: int = 0
    failed: int = 0
    requeued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Finisher:
    """Collects outcomes from the worker threads and acknowledges them in batches.

    >>> finisher = Finisher(app, "host:1:abc", Counters())   # doctest: +SKIP
    >>> finisher.add(Outcome("ok", raw), unit)                # doctest: +SKIP
    >>> finisher.flush()                                      # doctest: +SKIP
    """

    def __init__(self, app: ProcessorHost, identity: str, counters: Counters) -> None:
        self.app = app
        self.identity = identity
        self.counters = counters
        self._outcomes: list[tuple[Outcome, FetchedJob]] = []
        self._cond = threading.Condition()

    def add(self, outcome: Outcome, unit: FetchedJob) -> None:
        with self._cond:
            self._outcomes.append((outcome, unit))
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def run(self, stop: threading.Event) -> None:
        """Acknowledge batches until ``stop`` is set (the caller then flushes once more)."""
        while not stop.is_set():
            with self._cond:
                while not self._outcomes and not stop.is_set():
                    self._cond.wait(0.5)
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Acknowledge everything collected so far; retry Redis failures (a bounded number of
        times when ``final``, at shutdown)."""
        with self._cond:
            batch, self._outcomes = self._outcomes, []
        if not batch:
            return
        app, settings = self.app, self.app.settings
        attempts = 10 if final else 1_000_000
        run_batch_hook(app, "settle_batch", [unit for _, unit in batch], attempts=attempts)
        outcomes = [outcome for outcome, _ in batch]
        for attempt in range(attempts):
            now = app.clock.time()
            try:
                app.store.finish(
                    self.identity,
                    outcomes,
                    utc_day(now),
                    settings.dead_max_jobs,
                    now - settings.dead_timeout,
                )
                break
            except redis.RedisError as exc:
                log.error("acknowledging %d job(s) failed (%s); retrying", len(outcomes), exc)
                app.clock.sleep(min(5.0, 0.1 * 2**attempt))
        failed = sum(1 for o in outcomes if o.kind not in ("ok", "gone"))
        processed = sum(1 for o in outcomes if o.kind != "gone")
        with self.counters.lock:
            self.counters.processed += processed
            self.counters.failed += failed
