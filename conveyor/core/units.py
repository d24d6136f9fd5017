"""The fetched jobs of one worker process between fetch and acknowledgement (SPEC CORE-3).

:class:`Units` is the in-memory side of the working list: the jobs waiting for a thread (in
fetch order, which is the working list's order), how many jobs the process holds, which
payloads it holds (so it can find entries of its own working list it does not know about: a
lost fetch reply), and the *start boundary* that tells recovery which jobs had started.

The start boundary (docs/reliability.md, "Interrupted means interrupted"): Redis holds, per
process, the oldest job of its working list that it has not started; jobs from there to the
newest were only prefetched, so a crash does not count them as interrupted. The boundary is
published in the fetch and acknowledgement calls the process makes anyway (no extra round trip
per job). A thread may start a job only once a publication placed the boundary past it; a
publication hands out a few such permits ahead (``slack``) so threads rarely wait. A job that
was interrupted before (a suspect) runs alone, so if it kills the process again it alone is
blamed, and a poison job is parked alone.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from conveyor.clock import Clock
from conveyor.core.middleware import FetchedJob

#: ``confirmed`` when no boundary is published: every job may start (all count as started).
NO_BOUNDARY = 1 << 62


def is_suspect(unit: FetchedJob) -> bool:
    """Whether a job was interrupted before (it may be what killed a process).

    >>> is_suspect(FetchedJob("q", "{}", {"class": "A", "args": [], "interrupted_count": 1}, None))
    True
    """
    count = unit.job.get("interrupted_count") if unit.job is not None else None
    return isinstance(count, int) and not isinstance(count, bool) and count > 0


class Publication:
    """One publication of the start boundary, made under :meth:`Units.publishing`."""

    def __init__(self, units: Units) -> None:
        self.units = units
        self.seq = NO_BOUNDARY
        self._from_batch: tuple[int, int] | None = None

    def for_finish(self, slack: int) -> str:
        """The boundary to publish with an acknowledgement: the job ``slack`` places after
        the oldest one waiting for a thread (never before the boundary already published);
        ``""`` when no job waits."""
        seq, raw = self.units._boundary(slack)
        self.seq = seq
        return raw

    def for_fetch(self) -> tuple[str, int]:
        """``(boundary, starting)`` for a batch fetch: the boundary among the jobs waiting, or
        ``""`` and how many of the new batch idle threads will start at once."""
        units = self.units
        seq, raw = units._boundary(0)
        if raw:
            self.seq = seq
            return raw, 0
        starting = units._idle_threads()
        self._from_batch = (units._next_seq, starting)
        return "", starting

    def fetched(self, count: int) -> None:
        """The batch fetch returned ``count`` jobs (their seqs start at the one reserved)."""
        if self._from_batch is not None:
            first, starting = self._from_batch
            self.seq = first + starting if count > starting else NO_BOUNDARY


class Units:
    """Fetched jobs waiting for a thread, and what this process holds in all.

    ``limit`` is threads + prefetch; the fetcher refills only once ``refill`` slots are free,
    so a busy worker fetches (and prepares and acknowledges) in batches.

    >>> units = Units(20, 10, concurrency=10, clock=SYSTEM_CLOCK)   # doctest: +SKIP
    """

    def __init__(self, limit: int, refill: int, *, concurrency: int, clock: Clock) -> None:
        self.limit = limit
        self.refill = refill
        self.concurrency = concurrency
        self.clock = clock
        self._cond = threading.Condition()
        self._deque: deque[tuple[int, FetchedJob | None]] = deque()
        self._next_seq = 0
        self._inflight = 0
        self._running = 0
        self._solo = False
        self._confirmed = NO_BOUNDARY
        self._held: Counter[str] = Counter()
        self._fetching_since: float | None = None
        self._publish_lock = threading.Lock()
        #: Monotonic time until which our liveness key is known to exist: past it, no job
        #: starts until a heartbeat tells whether another process took our jobs meanwhile.
        self._fresh_until = float("inf")
        self._waiting: dict[int, str] = {}
        self._revoked: set[int] = set()
        #: Set (read without a lock) while a thread waits for a publication.
        self.wanted = False
        #: Called when a thread needs a publication (the finisher's wake-up).
        self.on_wanted: Callable[[], None] = lambda: None

    # -- the fetcher's side -----------------------------------------------------------------------
    def room(self, quiet: threading.Event) -> int | None:
        """The free slots once a refill is due; ``None`` if none after a short wait."""
        with self._cond:
            if self._inflight > self.limit - self.refill and not quiet.is_set():
                self._cond.wait(0.5)
            if self._inflight > self.limit - self.refill:
                return None
            return self.limit - self._inflight

    def hold(self, raws: Iterable[str]) -> None:
        """Payloads this process now holds in its working list."""
        with self._cond:
            self._held.update(raws)

    def release_held(self, raws: Iterable[str]) -> None:
        """Payloads that left the working list (acknowledged, given back, handed off)."""
        with self._cond:
            self._held.subtract(raws)
            self._held += Counter()  # drop zero counts

    @contextmanager
    def fetching(self) -> Iterator[None]:
        """Around a fetch call: until its reply is held, its jobs are not orphans."""
        with self._cond:
            self._fetching_since = self.clock.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._fetching_since = None

    def unheld(self, entries: Iterable[str]) -> tuple[Counter[str], float | None]:
        """Entries of the working list this process does not hold, and since when a fetch
        call (whose reply may still bring some of them) is under way."""
        counts = Counter(entries)
        with self._cond:
            return counts - self._held, self._fetching_since

    def add(self, units: list[FetchedJob | None]) -> None:
        """Queue a fetched batch in fetch order; ``None`` stands for a job a middleware handed
        off (it keeps its place in the numbering the boundary was published with)."""
        with self._cond:
            for unit in units:
                if unit is not None:
                    self._deque.append((self._next_seq, unit))
                    self._inflight += 1
                self._next_seq += 1
            self._cond.notify_all()

    def drain(self) -> list[FetchedJob]:
        """Take every job no thread has taken (they are then no longer counted)."""
        with self._cond:
            out = [u for _, u in self._deque if u is not None]
            sentinels = [(s, u) for s, u in self._deque if u is None]
            self._deque = deque(sentinels)
            self._inflight -= len(out)
            self._cond.notify_all()
        return out

    def discard_missing(self, entries: Iterable[str]) -> list[FetchedJob]:
        """Drop unstarted jobs no longer in the working list (recovered by another process
        while this one was taken for dead): running them again would duplicate them."""
        present = Counter(entries)
        kept: deque[tuple[int, FetchedJob | None]] = deque()
        dropped: list[FetchedJob] = []
        with self._cond:
            for seq, raw in sorted(self._waiting.items()):
                if present[raw] > 0:
                    present[raw] -= 1
                else:
                    self._revoked.add(seq)
            for seq, unit in self._deque:
                if unit is None or present[unit.raw] > 0:
                    if unit is not None:
                        present[unit.raw] -= 1
                    kept.append((seq, unit))
                else:
                    dropped.append(unit)
            self._deque = kept
            self._inflight -= len(dropped)
            self._held.subtract(u.raw for u in dropped)
            self._held += Counter()
            self._cond.notify_all()
        return dropped

    def idle(self) -> bool:
        with self._cond:
            return self._inflight == 0

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- the worker threads' side -----------------------------------------------------------------
    def take(self) -> tuple[int, FetchedJob] | None:
        """The next job for a thread, in fetch order (``None``: the thread should end). A
        suspect is taken only when no other job runs, and nothing else starts while it runs."""
        with self._cond:
            while True:
                if self._deque:
                    seq, unit = self._deque[0]
                    if unit is None:
                        self._deque.popleft()
                        return None
                    suspect = is_suspect(unit)
                    if not self._solo and (not suspect or self._running == 0):
                        self._deque.popleft()
                        self._running += 1
                        self._solo = suspect
                        return seq, unit
                self._cond.wait()

    def may_start(self, seq: int, raw: str) -> bool:
        """Wait until the published boundary is past job ``seq`` (almost always at once) and
        the process is known to be alive; False if the job was recovered elsewhere meanwhile
        (this process was taken for dead: it must not run it too)."""
        with self._cond:
            self._waiting[seq] = raw
            try:
                while seq not in self._revoked:
                    if seq >= self._confirmed:
                        self.wanted = True
                        self.on_wanted()
                    elif self.clock.monotonic() < self._fresh_until:
                        return True
                    self._cond.wait(1.0)
                self._revoked.discard(seq)
                self._held[raw] -= 1
                self._held += Counter()
                return False
            finally:
                self._waiting.pop(seq, None)

    def alive_until(self, until: float) -> None:
        """A heartbeat refreshed the liveness key: jobs may start until ``until``."""
        with self._cond:
            self._fresh_until = until
            self._cond.notify_all()

    def done(self) -> None:
        """A taken job finished (or was given back)."""
        with self._cond:
            self._running -= 1
            self._inflight -= 1
            self._solo = False
            self._cond.notify_all()

    def release(self, threads: int) -> None:
        """Tell ``threads`` worker threads to end once the jobs before are taken."""
        with self._cond:
            self._deque.extend((NO_BOUNDARY, None) for _ in range(threads))
            self._cond.notify_all()

    # -- publishing the start boundary ------------------------------------------------------------
    @contextmanager
    def publishing(self) -> Iterator[Publication]:
        """Serialise publications; confirm the new boundary when the call succeeded, or allow
        no start until the next one when it failed (Redis may or may not hold it)."""
        with self._publish_lock:
            publication = Publication(self)
            try:
                yield publication
            except BaseException:
                with self._cond:
                    self._confirmed = -1
                raise
            with self._cond:
                self._confirmed = publication.seq
                self.wanted = False
                self._cond.notify_all()

    def _boundary(self, slack: int) -> tuple[int, str]:
        with self._cond:
            waiting = [(s, u) for s, u in self._deque if u is not None]
            floor = max(self._confirmed, 0)
            for seq, unit in waiting[min(slack, len(waiting)) :]:
                if seq >= floor:
                    return seq, unit.raw
            return NO_BOUNDARY, ""

    def _idle_threads(self) -> int:
        with self._cond:
            waiting = sum(1 for _, u in self._deque if u is not None)
            return max(0, self.concurrency - self._running - waiting)
