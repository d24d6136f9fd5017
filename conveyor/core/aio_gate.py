"""When a job of an asyncio worker may start, and the start boundary that tells recovery which
of its jobs had started (docs/reliability.md, "Interrupted means interrupted").

The same rules as the threaded worker's (:mod:`conveyor.core.units`), on one event loop, so
without locks. Redis holds the oldest job of the process's working list it has not started; a
crash counts an interruption only for the jobs older than it. The boundary rides on the
acknowledgements (:mod:`conveyor.core.aio_finisher`): each one captures it (:meth:`capture`)
and confirms it once Redis took it. A job starts at once while the confirmed boundary is past
it; from a capture that names it until the reply, it waits. Each acknowledgement permits twice
as many jobs ahead as it acknowledged, or every job waiting while jobs are short (faster than
:data:`SHORT_JOB`, where waiting for a round trip would cost more than the job), and a fetched
batch asks for a publication at once unless jobs are short.

A *suspect*, a job interrupted before, may be what kills the process: it starts once it is the
oldest job not started and nothing else runs, after a publication that names every job behind
it as not started; nothing starts beside it. So a poison job is blamed alone.

And no job starts while the process's liveness key may have expired (a pause, SIGSTOP): the
next heartbeat tells whether another process took its jobs, and those no longer in its working
list are dropped, not run a second time (:meth:`revoke`).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from itertools import islice
from typing import Literal

from conveyor.core.middleware import FetchedJob
from conveyor.core.units import NO_BOUNDARY, SHORT_JOB, STARTED_UP_TO, is_suspect

#: The slack that permits every job waiting.
EVERY_JOB = 1 << 30


class StartGate:
    """The fetched jobs of an asyncio worker no slot has started, in fetch order (the working
    list's order), what may start, and the start boundary to publish. ``publish()`` asks the
    finisher for a publication and returns once Redis took one.

    >>> gate = StartGate(publish)                                   # doctest: +SKIP
    >>> gate.added(unit); seq = gate.seq(unit)                      # doctest: +SKIP
    >>> if gate.slow(seq, unit): await gate.admit(seq, unit)        # doctest: +SKIP
    >>> gate.started(unit); ...; gate.finished(seq)                 # doctest: +SKIP
    >>> seq, raw = gate.capture(slack); ...; gate.confirm(seq)      # doctest: +SKIP
    """

    def __init__(self, publish: Callable[[], Awaitable[None]]) -> None:
        self._publish = publish
        self._next_seq = 0
        self._solo_raw = ""
        #: Fetched jobs not started, in fetch order: first those a slot took and that wait in
        #: :meth:`admit` (slots take jobs in order), then those no slot took yet.
        self._unstarted: dict[int, tuple[int, FetchedJob]] = {}
        self._admitting = 0  # jobs a slot took that wait in admit (the oldest unstarted)
        self._running = 0
        self._solo: int | None = None
        self._suspects: set[int] = set()
        self._stopping = False
        self._revoked: set[int] = set()
        #: Monotonic time until which the liveness key is known to exist (a heartbeat's).
        self.fresh_until = float("inf")
        #: Jobs before this sequence number may start: the published boundary (or the one a
        #: publication in flight names). No boundary published: every job (all count as
        #: started); after a failed publication: none, until the next one.
        self.confirmed = NO_BOUNDARY
        #: Whether a publication is wanted soon (a batch was fetched, a job waits to start).
        self.wanted = False
        #: Whether a job shorter than :data:`SHORT_JOB` finished since the last publication.
        self.short = False
        #: Whether the jobs are short: publications then permit every job waiting.
        self.eager = False
        #: Called when a publication is wanted (wakes the finisher).
        self.on_wanted: Callable[[], None] = lambda: None
        #: Set (and replaced) whenever a job waiting to start may look again.
        self._event = asyncio.Event()

    def added(self, unit: FetchedJob | None) -> None:
        """A fetched job, in fetch order (``None``: one a middleware handed off)."""
        if unit is not None:
            self._unstarted[id(unit)] = (self._next_seq, unit)
        self._next_seq += 1

    def dropped(self, unit: FetchedJob) -> None:
        """A fetched job given back (or recovered elsewhere) before any slot took it."""
        entry = self._unstarted.pop(id(unit), None)
        if entry is not None:
            self._revoked.discard(entry[0])

    def seq(self, unit: FetchedJob) -> int:
        return self._unstarted[id(unit)][0]

    def slow(self, seq: int, unit: FetchedJob) -> bool:
        """Whether job ``seq`` must go through :meth:`admit` (else it starts at once)."""
        return (
            seq >= self.confirmed
            or time.monotonic() >= self.fresh_until
            or self._solo is not None
            or bool(self._suspects)
            or is_suspect(unit)
        )

    def started(self, unit: FetchedJob) -> None:
        del self._unstarted[id(unit)]
        self._running += 1

    def finished(self, seq: int, seconds: float) -> None:
        """Job ``seq`` ended after running ``seconds``. After the suspect running alone, the
        jobs behind it start once a publication permits them."""
        self._running -= 1
        if seconds < SHORT_JOB:
            self.short = True
        if self._solo == seq:
            self._solo = None
            self.request(always=True)
        if self._suspects:
            self.wake()

    def request(self, always: bool = False) -> None:
        """Ask for a publication soon (a batch was fetched: its jobs should be known in Redis
        as not started), unless jobs are short and every job is permitted anyway."""
        if always or not self.eager or self._solo is not None:
            self.wanted = True
            self.on_wanted()

    # -- publications (the finisher's side) -------------------------------------------------------
    def capture(self, slack: int) -> tuple[int, str]:
        """The boundary to publish with an acknowledgement (its sequence number and payload,
        ``""`` for none): the job ``slack`` places after the oldest one no slot took, or, while
        a suspect runs alone, the oldest job behind it. Until :meth:`confirm` no job at or past
        it may start."""
        self.wanted = False
        solo = self._solo
        if solo is not None:
            entry = next((e for e in self._unstarted.values() if e[0] != solo), None)
        else:
            entry = next(islice(self._unstarted.values(), self._admitting + slack, None), None)
        if entry is None and solo is not None:
            # Nothing fetched behind the suspect yet: name it as the newest job that may have
            # started (see units.STARTED_UP_TO), so jobs fetched while it runs count as not
            # started, and none of them starts without a publication.
            self.confirmed = min(self.confirmed, self._next_seq)
            return self._next_seq, STARTED_UP_TO + self._solo_raw
        if entry is None:
            return NO_BOUNDARY, ""
        self.confirmed = min(self.confirmed, entry[0])
        return entry[0], entry[1].raw

    def confirm(self, seq: int) -> None:
        """Redis took the boundary captured as ``seq``: the jobs before it may start."""
        self.confirmed = seq
        self.wake()

    def failed(self) -> None:
        """A publication failed (Redis may or may not hold it): no job starts until the next
        one succeeds."""
        self.confirmed = -1
        self.wanted = True

    def alive_until(self, until: float) -> None:
        """A heartbeat refreshed the liveness key: jobs may start until ``until``."""
        self.fresh_until = until
        self.wake()

    def revoke(self, entries: Iterable[str]) -> list[FetchedJob]:
        """The process was taken for dead: of the jobs not started, those no longer in its
        working list (``entries``) were recovered elsewhere. Returns them (the caller removes
        the ones no slot took); a slot that took one is told to drop it."""
        present = Counter(entries)
        gone: list[FetchedJob] = []
        for seq, unit in list(self._unstarted.values()):
            if present[unit.raw] > 0:
                present[unit.raw] -= 1
            else:
                gone.append(unit)
                self._revoked.add(seq)
        self.wake()
        return gone

    def stop(self) -> None:
        """The worker stops: jobs waiting to start give up (and go back to their queue)."""
        self._stopping = True
        self.wake()

    def wake(self) -> None:
        """Every job waiting to start looks again."""
        self._event.set()
        self._event = asyncio.Event()

    # -- the slots' side --------------------------------------------------------------------------
    async def admit(self, seq: int, unit: FetchedJob) -> Literal["start", "back", "drop"]:
        """Wait until job ``seq`` may start: a suspect once it is the oldest job not started
        and nothing runs (then a publication names every job behind it as not started); any
        other job once the boundary is past it and no suspect runs or waits before it; none
        while the liveness key may have expired. ``"back"`` if the worker stopped meanwhile
        (the caller gives the job back), ``"drop"`` if the job was recovered elsewhere (the
        caller forgets it); either way it is no longer counted here."""
        suspect = is_suspect(unit)
        if suspect:
            self._suspects.add(seq)

        def ready() -> bool:
            if self._stopping or seq in self._revoked:
                return True
            if self._solo is not None or time.monotonic() >= self.fresh_until:
                return False
            if not suspect:
                if self._suspects and min(self._suspects) < seq:
                    return False
                if seq >= self.confirmed:
                    self.request(always=True)
                    return False
                return True
            oldest = next(iter(self._unstarted.values()))[0]
            return oldest == seq and self._running == 0

        self._admitting += 1
        try:
            while not ready():
                await self._event.wait()
        finally:
            self._admitting -= 1
        self._suspects.discard(seq)
        if self._stopping or seq in self._revoked:
            revoked = seq in self._revoked
            self._revoked.discard(seq)
            del self._unstarted[id(unit)]
            self.wake()
            return "drop" if revoked else "back"
        if suspect:
            self._solo, self._solo_raw = seq, unit.raw
            await self._publish()
        return "start"
