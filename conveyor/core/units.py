"""The fetched jobs of one worker process between fetch and acknowledgement (SPEC CORE-3).

:class:`Units` is the in-memory side of the working list: the jobs waiting for a thread (in
fetch order, which is the working list's order), how many jobs the process holds, which
payloads it holds (so it can find entries of its own working list it does not know about: a
lost fetch reply), and the *start boundary* that tells recovery which jobs had started.

The start boundary (docs/reliability.md, "Interrupted means interrupted"): Redis holds, per
process, the oldest job of its working list that it has not started; jobs from there to the
newest were only prefetched, so a crash does not count them as interrupted. The boundary is
published with the acknowledgement calls the process makes anyway (no extra round trip per
job). A thread may start a job only once a publication placed the boundary past it; a
publication hands out permits ahead (``slack``) so threads rarely wait. A job that was
interrupted before (a suspect) runs alone, so if it kills the process again it alone is
blamed, and a poison job is parked alone.
"""

from __future__ import annotations

import queue as queue_mod
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from conveyor.clock import Clock
from conveyor.core.middleware import FetchedJob

#: ``confirmed`` when no boundary is published: every job may start (all count as started).
NO_BOUNDARY = 1 << 62
#: Marks a published boundary that names the newest job that may have started instead of the
#: oldest that has not (payloads are JSON objects, so none starts with it): a suspect running
#: alone with no job fetched behind it yet. Jobs fetched later are newer, so not started.
STARTED_UP_TO = ">"
#: Jobs shorter than this finish faster than an acknowledgement round trip: when a batch holds
#: one, every job waiting gets its permit at once (a job would otherwise wait for a round trip;
#: such jobs start within milliseconds anyway). Longer jobs get exact permits. Both worker
#: modes (:mod:`conveyor.core.finisher`, :mod:`conveyor.core.aio_gate`).
SHORT_JOB = 0.05
#: With the default prefetch, fetch ahead about this many seconds of work (at the measured job
#: run time), at most MAX_PREFETCH jobs: fast jobs then come in batches even at concurrency 1,
#: while slow jobs are never held back from other processes.
PREFETCH_WINDOW = 0.02
MAX_PREFETCH = 100
MAX_BATCH = 100
#: After a fetched job took a shared slot before running, or was handed off (a concurrency
#: limit deferred it: jobs held ahead took slots that running ones need), the prefetch stays
#: at its floor this long.
HANDOFF_BACKOFF = 30.0


def prefetch_for(avg_run: float, concurrency: int, floor: int) -> int:
    """How many jobs to fetch beyond the running ones, for jobs taking ``avg_run`` seconds:
    about :data:`PREFETCH_WINDOW` of work, never fewer than ``floor`` nor more than
    :data:`MAX_PREFETCH`.

    >>> prefetch_for(0.0002, 1, 1), prefetch_for(0.5, 10, 10), prefetch_for(1e-6, 10, 10)
    (100, 10, 100)
    """
    ahead = int(concurrency * PREFETCH_WINDOW / max(avg_run, 1e-6))
    return min(MAX_PREFETCH, max(floor, ahead))


def moving_average(avg: float, seconds: float) -> float:
    """Fold one job's run time into the average (negative: none measured yet).

    >>> moving_average(-1.0, 0.5), moving_average(1.0, 2.0)
    (0.5, 1.01)
    """
    return seconds if avg < 0 else avg + (seconds - avg) * 0.01


def resize_due(measures: int, avg_run: float) -> bool:
    """Whether the prefetch is worth sizing again after the ``measures``-th job: after each
    job of a millisecond or more; after the first and then every 16th of shorter ones (whose
    sizing would cost a share of each job's CPU).

    >>> resize_due(1, 0.0002), resize_due(3, 0.0002), resize_due(17, 0.0002), resize_due(3, 0.01)
    (True, False, True, True)
    """
    return avg_run >= 0.001 or measures % 16 == 1


def resized(
    avg_run: float, current: int, *, concurrency: int, floor: int, floor_until: float, clock: Clock
) -> int | None:
    """The prefetch to switch to for jobs taking ``avg_run`` seconds, ``None`` to keep
    ``current``: up at once, unless a hand-off keeps it at its floor until ``floor_until``
    (:data:`HANDOFF_BACKOFF`); down only once jobs got three times slower than it was sized
    for (a pause of the machine must not make a process hand jobs back and forth).

    >>> from conveyor.clock import FakeClock
    >>> clock = FakeClock()
    >>> sized = {"concurrency": 10, "floor": 10, "floor_until": 0.0, "clock": clock}
    >>> resized(0.0002, 10, **sized), resized(0.002, 100, **sized)
    (100, None)
    """
    prefetch = prefetch_for(avg_run, concurrency, floor)
    if prefetch > current:
        return None if clock.monotonic() < floor_until else prefetch
    return prefetch if prefetch * 3 < current else None


class LimitBackoff:
    """The prefetch's answer to a fetched batch that met a shared limit: a job took a scarce
    slot, or a concurrency limit deferred one (jobs held ahead take slots that running jobs
    need). The prefetch halves, never below its floor, and does not grow again for
    :data:`HANDOFF_BACKOFF`. It halves again only once as many jobs as it then allows have been
    fetched since: the batches already fetched under the old size still meet the limit, and
    counting them too would drop a process whose own prefetch filled a roomy limit (one
    process, limit 100, a prefetch of 100) to its floor instead of the size the limit allows.
    Slots that stay scarce bring it to the floor within a few hundred jobs.

    >>> from conveyor.clock import FakeClock
    >>> b = LimitBackoff(FakeClock())
    >>> b.met(100, floor=10, fetched=100), b.met(50, floor=10, fetched=120)
    (50, 50)
    >>> b.met(50, floor=10, fetched=150), b.met(25, floor=10, fetched=200)
    (25, 12)
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        #: Until this monotonic time the prefetch does not grow.
        self.until = 0.0
        self._next = 0
        #: The most the prefetch may be until ``ceiling_until`` (:meth:`limited`).
        self.ceiling = MAX_PREFETCH
        self.ceiling_until = 0.0

    def limited(self, slots: int, *, concurrency: int, floor: int) -> int:
        """A fetched job took one of the ``slots`` slots of a concurrency limit at fetch: the
        most the prefetch may be for :data:`HANDOFF_BACKOFF` (the smallest limit met in that
        time). A job holds its slot from its fetch until it finishes, so a process holds as
        many slots as it has jobs of the class running and waiting for a thread: with threads
        plus prefetch within half the limit, a process alone never defers its own jobs, and
        two share the limit without deferring each other's (a deferral, or the last free slot
        taken, would halve the prefetch, :meth:`met`, and stop the processes keeping slots
        for their next jobs for a while). Before, a lone process at ``-c 10`` under a limit of
        100 prefetched 100, deferred its own jobs and ended at its floor: half the jobs per
        second of the same job unlimited.

        >>> from conveyor.clock import FakeClock
        >>> b = LimitBackoff(FakeClock())
        >>> b.limited(100, concurrency=10, floor=10), b.limited(5, concurrency=10, floor=10)
        (40, 10)
        >>> b.capped(100), b.capped(8)
        (10, 8)
        """
        cap = max(floor, slots // 2 - concurrency)
        now = self.clock.monotonic()
        self.ceiling = cap if now >= self.ceiling_until else min(self.ceiling, cap)
        self.ceiling_until = now + HANDOFF_BACKOFF
        return self.ceiling

    def capped(self, prefetch: int) -> int:
        """``prefetch``, at most the ceiling while it holds."""
        if self.clock.monotonic() < self.ceiling_until:
            return min(prefetch, self.ceiling)
        return prefetch

    def met(self, prefetch: int, *, floor: int, fetched: int) -> int:
        """The prefetch after a batch that met a limit, ``fetched`` jobs into the process's
        life (a running count)."""
        self.until = self.clock.monotonic() + HANDOFF_BACKOFF
        if fetched < self._next:
            return prefetch
        smaller = max(floor, prefetch // 2)
        self._next = fetched + smaller
        return smaller


def slot_ceiling(
    backoff: LimitBackoff, units: Iterable[FetchedJob | None], *, concurrency: int, floor: int
) -> int | None:
    """The prefetch ceiling a fetched batch sets (:meth:`LimitBackoff.limited`, from the
    smallest concurrency limit whose slots its jobs took), ``None`` when none is limited."""
    slots = min((u.slot_limit for u in units if u is not None and u.slot_limit), default=0)
    if not slots:
        return None
    return backoff.limited(slots, concurrency=concurrency, floor=floor)


def refill_for(limit: int, concurrency: int) -> int:
    """Free slots at which a refill is due, so jobs come in batches: three quarters of the
    jobs held while what is left still gives every thread a job (a large prefetch of short
    jobs: fewer, larger fetch and acknowledgement calls, whose fixed cost is most of their
    CPU), else half.

    >>> refill_for(2, 1), refill_for(20, 10), refill_for(110, 10), refill_for(10, 10)
    (1, 10, 82, 5)
    """
    three_quarters = min(limit * 3 // 4, limit - concurrency)  # every thread keeps a job
    return max(1, min(max(limit // 2, three_quarters), MAX_BATCH))


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
        #: The suspect running alone when the boundary was captured, if any.
        self.solo: int | None = None

    def for_finish(self, slack: int) -> str:
        """The boundary to publish with an acknowledgement: the job ``slack`` places after
        the oldest one waiting for a thread; ``""`` when none is that far. From now until the
        call returns, no job at or past it may start (it is about to be published as not
        started)."""
        self.seq, raw, self.solo = self.units._capture(slack)
        return raw


class Units:
    """Fetched jobs waiting for a thread, and what this process holds in all.

    ``limit`` is threads + prefetch; the fetcher refills only once ``refill`` slots are free,
    so a busy worker fetches (and prepares and acknowledges) in batches. Threads take jobs from
    a C ``SimpleQueue`` (the hot path); a suspect is held back until nothing runs, and nothing
    is handed out while it runs. With ``adaptive``, the prefetch follows the measured run time
    of the jobs (:func:`prefetch_for`, never below the one given), and :meth:`surplus` hands
    back the jobs beyond it when jobs turn slow.

    >>> units = Units(20, 10, concurrency=10, clock=SYSTEM_CLOCK)   # doctest: +SKIP
    """

    def __init__(
        self, limit: int, refill: int, *, concurrency: int, clock: Clock, adaptive: bool = False
    ) -> None:
        self.limit = limit
        self.refill = refill
        self.concurrency = concurrency
        self.clock = clock
        self.adaptive = adaptive
        self._floor = limit - concurrency
        #: Seconds per job (a moving average); negative: none measured yet.
        self.avg_run = -1.0
        self._measures = 0
        self._backoff = LimitBackoff(clock)
        self._queue: queue_mod.SimpleQueue[tuple[int, FetchedJob] | None] = queue_mod.SimpleQueue()
        # One lock; the fetcher waits for room, a thread for a permit, each on its condition.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._permit = threading.Condition(self._lock)
        #: Jobs no thread took yet, in fetch order (queued, then held back behind a suspect).
        self._order: deque[tuple[int, FetchedJob]] = deque()
        self._held_back: deque[tuple[int, FetchedJob]] = deque()
        self._queued = 0
        self._dropped: set[int] = set()
        self._next_seq = 0
        self._inflight = 0
        self._running = 0
        self._solo: int | None = None
        self._solo_raw = ""
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
        #: Set while jobs are short: publications then permit every job fetched.
        self.eager = False
        #: Called when a thread needs a publication (the finisher's wake-up).
        self.on_wanted: Callable[[], None] = lambda: None

    # -- the fetcher's side -----------------------------------------------------------------------
    def room(self, quiet: threading.Event) -> int | None:
        """The free slots once a refill is due; ``None`` if none after a short wait."""
        with self._lock:
            if self._inflight > self.limit - self.refill and not quiet.is_set():
                self._room.wait(0.5)
            if self._inflight > self.limit - self.refill:
                return None
            return self.limit - self._inflight

    def hold(self, raws: Iterable[str]) -> None:
        """Payloads this process now holds in its working list."""
        with self._lock:
            self._held.update(raws)

    def release_held(self, raws: Iterable[str]) -> None:
        """Payloads that left the working list (acknowledged, given back, handed off)."""
        with self._lock:
            self._release(raws)

    def _release(self, raws: Iterable[str]) -> None:
        held = self._held
        for raw in raws:
            left = held[raw] - 1
            if left > 0:
                held[raw] = left
            else:
                held.pop(raw, None)

    @contextmanager
    def fetching(self) -> Iterator[None]:
        """Around a fetch call: until its reply is held, its jobs are not orphans."""
        with self._lock:
            self._fetching_since = self.clock.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._fetching_since = None

    def unheld(self, entries: Iterable[str]) -> tuple[Counter[str], float | None]:
        """Entries of the working list this process does not hold, and since when a fetch
        call (whose reply may still bring some of them) is under way."""
        counts = Counter(entries)
        with self._lock:
            return counts - self._held, self._fetching_since

    def add(self, units: list[FetchedJob | None]) -> None:
        """Queue a fetched batch in fetch order; ``None`` stands for a job a middleware handed
        off (it keeps its place in the numbering)."""
        with self._lock:
            pinned = False  # a job took a scarce shared slot ahead, or was handed off
            for unit in units:
                if unit is not None:
                    item = (self._next_seq, unit)
                    self._order.append(item)
                    self._held_back.append(item)
                    self._inflight += 1
                    pinned = pinned or unit.holds_slot
                else:
                    pinned = True
                self._next_seq += 1
            if self.adaptive:  # its own jobs must not fill a concurrency limit
                cap = slot_ceiling(
                    self._backoff, units, concurrency=self.concurrency, floor=self._floor
                )
                if cap is not None and self.limit - self.concurrency > cap:
                    self.limit = self.concurrency + cap
                    self.refill = refill_for(self.limit, self.concurrency)
            if pinned and self.adaptive:
                prefetch = self._backoff.met(
                    self.limit - self.concurrency, floor=self._floor, fetched=self._next_seq
                )
                self.limit = self.concurrency + prefetch
                self.refill = refill_for(self.limit, self.concurrency)
            self._hand_out()

    def _hand_out(self) -> None:
        """Move held-back jobs to the threads' queue: all of them, except that a suspect goes
        only once nothing runs or waits, and nothing goes while a suspect runs."""
        back = self._held_back
        while back and self._solo is None:
            seq, unit = back[0]
            if is_suspect(unit):
                if self._running or self._queued:
                    return
                self._solo, self._solo_raw = seq, unit.raw
                # It may kill the process again: before it starts, a publication must name
                # every job behind it as not started (permits ahead are withdrawn), or a
                # crash counts them all as interrupted with it.
                self._confirmed = min(self._confirmed, seq)
                self.wanted = True
                self.on_wanted()
            back.popleft()
            self._queued += 1
            self._queue.put((seq, unit))

    def drain(self) -> list[FetchedJob]:
        """Take every job no thread has taken (they are then no longer counted)."""
        with self._lock:
            out = [u for _, u in self._order]
            self._dropped.update(seq for seq, _ in self._order if seq not in self._held_seqs())
            self._order.clear()
            self._held_back.clear()
            self._inflight -= len(out)
            self._room.notify_all()
        return out

    def _held_seqs(self) -> set[int]:
        return {seq for seq, _ in self._held_back}

    def discard_missing(self, entries: Iterable[str]) -> list[FetchedJob]:
        """Drop untaken jobs no longer in the working list (recovered by another process
        while this one was taken for dead): running them again would duplicate them."""
        present = Counter(entries)
        dropped: list[FetchedJob] = []
        with self._lock:
            for seq, raw in sorted(self._waiting.items()):
                if present[raw] > 0:
                    present[raw] -= 1
                else:
                    self._revoked.add(seq)
            kept: deque[tuple[int, FetchedJob]] = deque()
            held_back = self._held_seqs()
            for seq, unit in self._order:
                if present[unit.raw] > 0:
                    present[unit.raw] -= 1
                    kept.append((seq, unit))
                    continue
                dropped.append(unit)
                if seq not in held_back:
                    self._dropped.add(seq)
            gone = {id(u) for u in dropped}
            self._order = kept
            self._held_back = deque(x for x in self._held_back if id(x[1]) not in gone)
            self._inflight -= len(dropped)
            self._release(u.raw for u in dropped)
            self._room.notify_all()
            self._permit.notify_all()
        return dropped

    def waiting(self) -> int:
        """Jobs handed out to the threads that no thread took yet (read without the lock)."""
        return self._queued

    def idle(self) -> bool:
        with self._lock:
            return self._inflight == 0

    def wake(self) -> None:
        with self._lock:
            self._room.notify_all()
            self._permit.notify_all()

    # -- the worker threads' side -----------------------------------------------------------------
    def take(self) -> tuple[int, FetchedJob] | None:
        """The next job for a thread, in fetch order (``None``: the thread should end)."""
        while True:
            item = self._queue.get()
            if item is None:
                return None
            seq = item[0]
            with self._lock:
                self._queued -= 1
                if seq in self._dropped:  # given back or recovered elsewhere meanwhile
                    self._dropped.discard(seq)
                    if self._solo == seq:
                        self._solo = None
                        self._hand_out()
                    continue
                order = self._order
                if order and order[0][0] == seq:
                    order.popleft()
                else:
                    order.remove(item)
                self._running += 1
                return item

    def may_start(self, seq: int, raw: str) -> bool:
        """Wait until the published boundary is past job ``seq`` (almost always at once) and
        the process is known to be alive; False if the job was recovered elsewhere meanwhile
        (this process was taken for dead: it must not run it too)."""
        # The common case, without the lock: permitted ahead, the process known alive. (The
        # take() before acquired the lock after any capture that lowered the boundary.)
        if seq < self._confirmed and self.clock.monotonic() < self._fresh_until:
            return True
        with self._lock:
            self._waiting[seq] = raw
            try:
                while seq not in self._revoked:
                    if seq >= self._confirmed:
                        self.wanted = True
                        self.on_wanted()
                    elif self.clock.monotonic() < self._fresh_until:
                        return True
                    self._permit.wait(1.0)
                self._revoked.discard(seq)
                self._release([raw])
                return False
            finally:
                self._waiting.pop(seq, None)

    def alive_until(self, until: float) -> None:
        """A heartbeat refreshed the liveness key: jobs may start until ``until``."""
        with self._lock:
            self._fresh_until = until
            self._permit.notify_all()

    def done(self, seq: int, seconds: float | None = None) -> None:
        """Job ``seq`` a thread took finished (or was given back) after running ``seconds``."""
        with self._lock:
            if seconds is not None:
                self._measured(seconds)
            self._running -= 1
            self._inflight -= 1
            if self._solo == seq:
                self._solo = None
            if self._held_back:
                self._hand_out()
            if self._inflight <= self.limit - self.refill:
                self._room.notify()

    def _measured(self, seconds: float) -> None:
        """Fold one run time into the average; resize the prefetch to it: up at once, down
        only when jobs got several times slower (a pause of the machine must not make it hand
        jobs back and forth)."""
        self.avg_run = moving_average(self.avg_run, seconds)
        self._measures += 1
        if not self.adaptive or not resize_due(self._measures, self.avg_run):
            return
        concurrency = self.concurrency
        prefetch = resized(
            self.avg_run,
            self.limit - concurrency,
            concurrency=concurrency,
            floor=self._floor,
            floor_until=self._backoff.until,
            clock=self.clock,
        )
        if prefetch is not None:
            prefetch = self._backoff.capped(prefetch)
            self.limit = concurrency + prefetch
            self.refill = refill_for(self.limit, self.concurrency)

    def surplus(self) -> list[FetchedJob]:
        """Take the newest jobs no thread has taken beyond the prefetch (jobs turned slow: other
        processes should have them); they are then no longer counted."""
        with self._lock:
            extra = len(self._order) - (self.limit - self.concurrency)
            if extra <= 0 or self._running + len(self._order) <= self.limit:
                return []
            out: list[FetchedJob] = []
            held_back = self._held_seqs()
            for _ in range(extra):
                seq, unit = self._order.pop()
                out.append(unit)
                if seq in held_back:
                    self._held_back.remove((seq, unit))
                else:
                    self._dropped.add(seq)
            out.reverse()
            self._inflight -= len(out)
            return out

    def release(self, threads: int) -> None:
        """Tell ``threads`` worker threads to end once the jobs before are taken."""
        for _ in range(threads):
            self._queue.put(None)

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
                with self._lock:
                    self._confirmed = -1
                raise
            with self._lock:
                confirmed = publication.seq
                if self._solo is not None and self._solo != publication.solo:
                    # A suspect came up after the capture: it still waits for a publication
                    # that names the jobs behind it (one is wanted already).
                    confirmed = min(confirmed, self._solo)
                self._confirmed = confirmed
                self._permit.notify_all()

    def request(self) -> None:
        """Ask for a publication soon (a batch was fetched: its jobs should be known in Redis
        as not started), unless jobs are short and every job is permitted anyway."""
        if not self.eager or self._solo is not None:
            self.wanted = True
            self.on_wanted()

    def _capture(self, slack: int) -> tuple[int, str, int | None]:
        # Any job no thread took is a valid boundary: every job a thread took (and so every
        # job that may have started) is older than all of them.
        with self._lock:
            self.wanted = False
            if self._solo is not None:  # a suspect runs alone: only it is permitted
                slack = min(slack, sum(1 for seq, _ in self._order if seq <= self._solo))
            if slack < len(self._order):
                seq, unit = self._order[slack]
                self._confirmed = min(self._confirmed, seq)
                return seq, unit.raw, self._solo
            if self._solo is not None:
                # Nothing fetched behind the suspect yet. "No boundary" would count every job
                # as started, the ones fetched while it runs too: name it as the newest that
                # may have started, and let no job fetched later start without a publication.
                seq = self._next_seq
                self._confirmed = min(self._confirmed, seq)
                return seq, STARTED_UP_TO + self._solo_raw, self._solo
            return NO_BOUNDARY, "", self._solo
