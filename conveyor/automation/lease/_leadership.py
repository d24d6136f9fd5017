"""One node's hold on one lease: acquire when free, renew well before expiry, and report a
term only while it is safely valid.

Safety rests on one rule: the node trusts a term only until

    deadline = (monotonic time when the successful acquire/renew call started) + ttl - margin

The backend's own expiry (``expires_at``) is computed later than that start and without the
margin, so another node can take over only after this node's :meth:`Leadership.current` has
already turned ``None`` — provided the clocks that judge expiry (the nodes' wall clocks for file
and S3, the Redis server's for Redis) do not drift apart by more than ``margin`` during a term.
A process paused (SIGSTOP, a long GC, a frozen VM) past its deadline finds ``current()`` is
``None`` when it wakes up, with no tick needed.
"""

from __future__ import annotations

import logging
import threading

from conveyor.automation.lease._base import Lease, Term, check_holder, check_ttl
from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.errors import LeaseError

log = logging.getLogger("conveyor.automation.lease")

#: The smallest default margin, for very short terms (tests).
MIN_MARGIN = 0.05
#: Renew once this fraction of the term has passed since the last successful acquire/renew.
RENEW_FRACTION = 1 / 3


class Leadership:
    """Holds one lease for one node (``holder``), with terms of ``term`` seconds.

    ``margin`` (default ``max(term / 5, 0.05)``) is how long before the term's end the node
    stops trusting it; it must cover clock skew between nodes and the time one lease call can
    take. It must be below two thirds of the term, so a renewal (due at one third) happens
    while the term is still trusted.

    >>> leadership = Leadership(lease, "node-a", term=300)          # doctest: +SKIP
    >>> while running:                                               # doctest: +SKIP
    ...     term = leadership.tick()         # None: not the master right now
    ...     clock.sleep(1)
    """

    def __init__(
        self,
        lease: Lease,
        holder: str,
        *,
        term: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
        margin: float | None = None,
    ) -> None:
        self.lease = lease
        self.holder = check_holder(holder)
        self.term = check_ttl(term)
        self.clock = clock
        self.margin = max(self.term / 5, MIN_MARGIN) if margin is None else float(margin)
        # margin < term * 2/3, written without the rounding of 1 - 1/3.
        if not (self.margin >= 0 and self.margin * 3 < self.term * 2):
            raise LeaseError(
                f"leadership margin {margin!r} must be at least 0 and below two thirds of the "
                f"term ({self.term:g} s), so the term is renewed before it stops being trusted"
            )
        # _tick_lock serialises lease calls; _state_lock only guards the three fields below, so
        # current() never waits behind a slow backend call.
        self._tick_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._term: Term | None = None
        self._started = 0.0
        self._deadline = 0.0
        #: What the last tick's lease call failed with (``None`` after a call that worked).
        self.last_error: str | None = None

    def __repr__(self) -> str:
        return f"Leadership({self.lease.description!r}, {self.holder!r})"

    def tick(self) -> Term | None:
        """Acquire the lease if nobody valid holds it, renew it once a third of the term has
        passed, and return :meth:`current`. A failing backend is logged, not raised: the held
        term (if any) stays trusted until its deadline and the next tick tries again."""
        with self._tick_lock:
            try:
                self._step()
            except LeaseError as exc:
                # Logged once per new message: a dead backend is retried every tick.
                if str(exc) != self.last_error:
                    log.warning("lease %s: %s", self.lease.description, exc)
                self.last_error = str(exc)
            else:
                self.last_error = None
        return self.current()

    def current(self) -> Term | None:
        """The held term while it is locally valid (before its deadline), else ``None``."""
        with self._state_lock:
            if self._term is None or self.clock.monotonic() >= self._deadline:
                return None
            return self._term

    def remaining(self) -> float:
        """Seconds until the held term stops being trusted (0 when there is none)."""
        with self._state_lock:
            if self._term is None:
                return 0.0
            return max(0.0, self._deadline - self.clock.monotonic())

    def resign(self) -> None:
        """Release the held term (if any) and forget it."""
        with self._tick_lock:
            with self._state_lock:
                term, self._term = self._term, None
            if term is None:
                return
            try:
                self.lease.release(term)
            except LeaseError as exc:
                # The term then simply runs out at its expiry.
                log.warning("lease %s: release failed: %s", self.lease.description, exc)
            else:
                log.info("lease %s: released term %d", self.lease.description, term.fence)

    # -- internals ------------------------------------------------------------------------------
    def _step(self) -> None:
        with self._state_lock:
            held, started, deadline = self._term, self._started, self._deadline
        now = self.clock.monotonic()
        if held is not None and now < deadline:
            if now - started < self.term * RENEW_FRACTION:
                return
            start = self.clock.monotonic()
            renewed = self.lease.renew(held, self.term)
            if renewed is not None:
                self._keep(renewed, start)
                return
            self._forget()
            log.warning("lease %s: term %d was lost", self.lease.description, held.fence)
        start = self.clock.monotonic()
        got = self.lease.acquire(self.holder, self.term)
        if got is None:
            self._forget()
            return
        if held is None or held.fence != got.fence:
            log.info("lease %s: holding term %d", self.lease.description, got.fence)
        self._keep(got, start)

    def _keep(self, term: Term, started: float) -> None:
        with self._state_lock:
            self._term = term
            self._started = started
            self._deadline = started + self.term - self.margin

    def _forget(self) -> None:
        with self._state_lock:
            self._term = None
