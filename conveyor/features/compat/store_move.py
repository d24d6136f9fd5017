"""Moving a queue to another store (``conveyor compat migrate-queue OLD [NEW] --to-store B``):
after a routing rule starts sending a queue's jobs to store B, the jobs already waiting in the
old store follow them, with the queue's scheduled and retrying jobs, those deferred by a
concurrency limit (they wait on B's queue, under B's limit), and dead ones on request.

>>> move_queue_to_store(app, "reports", to_store="b").total          # doctest: +SKIP
1200

Safe while workers and producers run, and when interrupted: chunk by chunk, each job is taken
off the queue into a moving list of the run in one atomic step, written to the other store,
and only then dropped from the moving list (:mod:`conveyor.redis.moves`). A run killed between
the two leaves its moving list registered; the next run delivers it first. Delivery is at
least once: a job whose chunk was written but not yet confirmed when the run died arrives
twice (at most one chunk per interrupted run), never zero times. Jobs running in the old store
finish there; a retry of one lands in the old store's retry set, so run again (or
``follow=``) until nothing is left.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor.core.payload import parse, queue_of
from conveyor.errors import ConfigurationError, PayloadError
from conveyor.features.compat.maintenance import (
    CHUNK,
    FOLLOW_INTERVAL,
    MigrationReport,
    Progress,
    requeued,
)
from conveyor.redis.moves import MoveStore
from conveyor.redis.store import ZSetName

if TYPE_CHECKING:
    from conveyor.core.app import App

log = logging.getLogger("conveyor.maintenance")

#: Every sorted set a run may take entries from (a resumed run empties them all).
ALL_SETS: tuple[ZSetName, ...] = ("schedule", "retry", "dead")


@dataclass
class StoreMoveReport(MigrationReport):
    """What :func:`move_queue_to_store` did: ``moved`` counts per place as for a rename."""

    from_store: str = "default"
    to_store: str = "default"
    #: Jobs an interrupted earlier run had taken off and this run delivered.
    resumed: int = 0


def move_queue_to_store(
    app: App,
    old: str,
    new: str | None = None,
    *,
    to_store: str,
    from_store: str | None = None,
    include_dead: bool = False,
    dry_run: bool = False,
    follow: float = 0.0,
    chunk: int = CHUNK,
    progress: Progress | None = None,
) -> StoreMoveReport:
    """Move queue ``old`` of store ``from_store`` (default: ``Settings.store``) to store
    ``to_store``, as queue ``new`` (default: the same name). Queued jobs move oldest first,
    behind the jobs already there; scheduled and retrying jobs (dead ones with
    ``include_dead``) move with their times. ``follow=N`` keeps moving late arrivals for N
    seconds.

    >>> move_queue_to_store(app, "reports", to_store="b", follow=30)   # doctest: +SKIP
    """
    source_name = app.stores.check(from_store or app.settings.store)
    target_name = app.stores.check(to_store)
    new = new or old
    if not old or source_name == target_name:
        raise ConfigurationError(
            f"moving queue {old!r} needs a name and two different stores, got "
            f"{source_name!r} to {target_name!r}; to rename within a store, leave out --to-store"
        )
    if chunk < 1:
        raise ConfigurationError(f"chunk must be >= 1, got {chunk}")
    report = StoreMoveReport(old, new, dry_run, from_store=source_name, to_store=target_name)
    mover = _StoreMover(
        MoveStore(app.stores.get(source_name)),
        MoveStore(app.stores.get(target_name)),
        report,
        chunk,
        progress,
    )
    if dry_run:
        mover.count(include_dead)
        return report
    mover.resume()
    mover.run_pass(include_dead)
    deadline = app.clock.monotonic() + follow
    while app.clock.monotonic() < deadline:
        app.clock.sleep(min(FOLLOW_INTERVAL, deadline - app.clock.monotonic()))
        mover.run_pass(include_dead)
    mover.source.finish(old, mover.run, ALL_SETS)
    report.remaining = mover.source.queue_length(old)
    if report.remaining == 0:
        report.forgotten = mover.source.forget_queue_if_empty(old)
    log.info(
        "moved %d job(s) from queue %s of store %s to queue %s of store %s: %s",
        report.total,
        old,
        source_name,
        new,
        target_name,
        report.moved or "none",
    )
    return report


def _goes_to(raw: str, queue: str) -> bool:
    """Whether a sorted-set entry is a job of ``queue`` (its queue or retry queue)."""
    if queue not in raw:
        return False
    try:
        job = parse(raw)
    except PayloadError:
        return False
    return queue_of(job) == queue or job.get("retry_queue") == queue


class _StoreMover:
    def __init__(
        self,
        source: MoveStore,
        target: MoveStore,
        report: StoreMoveReport,
        chunk: int,
        progress: Progress | None,
    ) -> None:
        self.source = source
        self.target = target
        self.report = report
        self.chunk = chunk
        self.progress = progress
        self.run = secrets.token_hex(8)
        self.destination = json.dumps({"store": report.to_store, "queue": report.new})

    def _payload(self, raw: str, *, queued: bool) -> str:
        r = self.report
        return raw if r.new == r.old else requeued(raw, r.old, r.new, moved=queued)

    def count(self, include_dead: bool) -> None:
        """Dry run: what a run would move now."""
        r = self.report
        for zset in self._sets(include_dead):
            found = sum(_goes_to(raw, r.old) for raw in self.source.scan_set(zset, self.chunk))
            r.add(zset, found)
        r.add("deferred", sum(len(raws) for _, raws in self.deferred()))
        r.add(f"queue:{r.old}", self.source.queue_length(r.old))

    def resume(self) -> None:
        """Deliver what interrupted runs of this queue took and never confirmed."""
        r = self.report
        for run, destination in self.source.unfinished(r.old).items():
            if destination != self.destination:
                raise ConfigurationError(
                    f"an earlier move of queue {r.old!r} from store {r.from_store!r} did not "
                    f"finish, to {destination}; finish it first by running that move again "
                    f"(its jobs wait in the moving list {self.source.keys.moving_list(r.old, run)})"
                )
            jobs = self.source.moving_jobs(r.old, run)
            self.target.put_jobs(r.new, [self._payload(x, queued=True) for x in jobs])
            self.source.confirmed_jobs(r.old, run)
            r.resumed += len(jobs)
            for zset in ALL_SETS:
                entries = self.source.moving_entries(r.old, run, zset)
                self.target.put_entries(
                    zset, [(self._payload(x, queued=False), s) for x, s in entries]
                )
                self.source.confirmed_entries(r.old, run, zset)
                r.resumed += len(entries)
            self.source.finish(r.old, run, ALL_SETS)

    def run_pass(self, include_dead: bool) -> None:
        # The sets and the deferred jobs first: a job promoted or resumed onto the queue
        # meanwhile is then found on the queue, which comes last.
        self.report.passes += 1
        for zset in self._sets(include_dead):
            self.move_set(zset)
        self.move_deferred()
        self.move_queue()

    def deferred(self) -> Iterator[tuple[str, list[str]]]:
        """Each deferred-jobs list of the source store, with its jobs of the queue."""
        for key in self.source.deferred_lists():
            raws = [
                x for x in self.source.read_list(key, self.chunk) if _goes_to(x, self.report.old)
            ]
            if raws:
                yield key, raws

    def move_deferred(self) -> None:
        """Jobs of the queue that wait for a concurrency-limit slot in the source store: to
        the destination's queue (behind the jobs there), where they take a slot of that store's
        limit when fetched. Left behind, they would wait for a worker of the source store."""
        r = self.report
        for key, raws in self.deferred():
            for start in range(0, len(raws), self.chunk):
                taken = self.source.take_list(
                    key, r.old, self.run, self.destination, raws[start : start + self.chunk]
                )
                self.target.put_jobs(r.new, [self._payload(x, queued=True) for x in taken])
                self.source.confirmed_jobs(r.old, self.run)
                r.add("deferred", len(taken))

    @staticmethod
    def _sets(include_dead: bool) -> tuple[ZSetName, ...]:
        return ALL_SETS if include_dead else ("schedule", "retry")

    def move_set(self, zset: ZSetName) -> None:
        length = self.source.set_length(zset)
        batch: list[str] = []
        examined = 0
        for raw in self.source.scan_set(zset, self.chunk):
            examined += 1
            if _goes_to(raw, self.report.old):
                batch.append(raw)
            if len(batch) >= self.chunk:
                self._move_entries(zset, batch)
                batch = []
        self._move_entries(zset, batch)
        if self.progress and length:
            self.progress(zset, examined, length)

    def _move_entries(self, zset: ZSetName, raws: list[str]) -> None:
        r = self.report
        taken = self.source.take_set(zset, r.old, self.run, self.destination, raws)
        if not taken:
            return
        self.target.put_entries(zset, [(self._payload(x, queued=False), s) for x, s in taken])
        self.source.confirmed_entries(r.old, self.run, zset)
        r.add(zset, len(taken))

    def move_queue(self) -> None:
        """Move the jobs there at the start of the pass (and later ones it reaches), oldest
        first, one chunk per round trip to each store."""
        r = self.report
        label = f"queue:{r.old}"
        length = self.source.queue_length(r.old)
        moved = 0
        while moved < length:
            taken = self.source.take_queue(r.old, self.run, self.destination, self.chunk)
            if not taken:
                break
            self.target.put_jobs(r.new, [self._payload(x, queued=True) for x in taken])
            self.source.confirmed_jobs(r.old, self.run)
            moved += len(taken)
            r.add(label, len(taken))
            if self.progress:
                self.progress(label, min(moved, length), length)
