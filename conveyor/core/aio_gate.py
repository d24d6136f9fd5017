"""When a job of an asyncio worker may start: at once, except around a suspect.

An asyncio worker publishes no start boundary while it runs ordinary jobs (a crash counts one
interruption for every job it held). A *suspect*, a job interrupted before, may be what kills
the process: it starts once it is the oldest job not started and nothing else runs, after an
acknowledgement that names every job behind it as not started (the start boundary,
docs/reliability.md); nothing starts beside it, and its own acknowledgement withdraws the
boundary before the jobs behind it start. So a poison job is blamed alone, as in threads mode
(:mod:`conveyor.core.units`). One event loop: no locks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from conveyor.core.middleware import FetchedJob
from conveyor.core.units import is_suspect


class StartGate:
    """The fetched jobs of an asyncio worker no slot has started, in fetch order (the working
    list's order), and what may start. ``publish(boundary)`` acknowledges what finished with
    the start ``boundary`` (``""``: none) and returns once Redis took it.

    >>> gate = StartGate(publish)                          # doctest: +SKIP
    >>> gate.added(unit); seq = gate.seq(unit)             # doctest: +SKIP
    >>> if gate.slow(unit): await gate.admit(seq, unit)    # doctest: +SKIP
    >>> if gate.finished(seq): await gate.withdraw()       # doctest: +SKIP
    """

    def __init__(self, publish: Callable[[str], Awaitable[None]]) -> None:
        self._publish = publish
        self._next_seq = 0
        self._unstarted: dict[int, tuple[int, FetchedJob]] = {}
        self._running = 0
        self._solo: int | None = None
        self._suspects: set[int] = set()
        self._stopping = False
        #: Set (and replaced) whenever a job waiting to start may look again.
        self._event = asyncio.Event()

    def added(self, unit: FetchedJob | None) -> None:
        """A fetched job, in fetch order (``None``: one a middleware handed off)."""
        if unit is not None:
            self._unstarted[id(unit)] = (self._next_seq, unit)
        self._next_seq += 1

    def dropped(self, unit: FetchedJob) -> None:
        """A fetched job given back before any slot took it."""
        self._unstarted.pop(id(unit), None)

    def seq(self, unit: FetchedJob) -> int:
        return self._unstarted[id(unit)][0]

    def slow(self, unit: FetchedJob) -> bool:
        """Whether job ``unit`` must go through :meth:`admit` (else it starts at once)."""
        return self._solo is not None or bool(self._suspects) or is_suspect(unit)

    def started(self, unit: FetchedJob) -> None:
        del self._unstarted[id(unit)]
        self._running += 1

    def finished(self, seq: int) -> bool:
        """Job ``seq`` ended. True when it was the suspect running alone: the caller then
        awaits :meth:`withdraw` (a plain call, not a coroutine, for every other job)."""
        self._running -= 1
        if self._solo == seq:
            return True
        if self._suspects:
            self.wake()
        return False

    async def withdraw(self) -> None:
        """After the suspect running alone: its acknowledgement withdraws the boundary before
        anything else starts."""
        await self._publish("")
        self._solo = None
        self.wake()

    def stop(self) -> None:
        """The worker stops: jobs waiting to start give up (and go back to their queue)."""
        self._stopping = True
        self.wake()

    def wake(self) -> None:
        """Every job waiting to start looks again."""
        self._event.set()
        self._event = asyncio.Event()

    async def admit(self, seq: int, unit: FetchedJob) -> bool:
        """Wait until job ``seq`` may start: a suspect once it is the oldest job not started
        and nothing runs (then a publication names every job behind it as not started); any
        other job while no suspect runs or waits before it. False if the worker stopped
        meanwhile: the caller gives the job back (it is no longer counted here)."""
        suspect = is_suspect(unit)
        if suspect:
            self._suspects.add(seq)

        def ready() -> bool:
            if self._stopping:
                return True
            if self._solo is not None:
                return False
            if not suspect:
                return not self._suspects or min(self._suspects) > seq
            oldest = next(iter(self._unstarted.values()))[0]
            return oldest == seq and self._running == 0

        while not ready():
            await self._event.wait()
        self._suspects.discard(seq)
        if self._stopping:
            del self._unstarted[id(unit)]
            self.wake()
            return False
        if suspect:
            self._solo = seq
            behind = [u for n, u in self._unstarted.values() if n != seq]
            await self._publish(behind[0].raw if behind else "")
        return True
