"""What every lease backend shares: the :class:`Term` a holder gets, the :class:`Lease`
protocol, and the rules that decide, from the stored record, what acquire, renew and release
write.

The file and S3 backends read the record, ask :func:`plan_acquire`/:func:`plan_renew`/
:func:`plan_release` what to write, and write it with a compare step (a lock, or an ETag); the
Redis backend runs the same rules inside Lua (``lease_*.lua``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Protocol

from conveyor.errors import LeaseError

#: Longest holder identity accepted (it is stored in every record).
MAX_HOLDER = 200


@dataclass(frozen=True)
class Term:
    """One holder's term of a lease.

    >>> Term(holder="node-a", fence=3, expires_at=1_700_000_300.0).fence
    3
    """

    #: Node identity of the holder.
    holder: str
    #: Fencing number: strictly increasing per lease, +1 on every new term (not on renew).
    fence: int
    #: Epoch seconds at which the term ends unless renewed (the backend's clock).
    expires_at: float


class Lease(Protocol):
    """A lease one node at a time may hold (see :func:`~conveyor.automation.lease.open_lease`)."""

    #: Where the lease lives, for logs and the API: ``file:/mnt/shared/wf.txt``,
    #: ``aws-s3:bucket/key``, ``redis:wf``.
    description: str

    def acquire(self, holder: str, ttl: float) -> Term | None:
        """A new term (fence + 1) if the lease is free, released or expired; a renewal if
        ``holder`` holds it already; ``None`` if another live holder has it."""
        ...

    def renew(self, term: Term, ttl: float) -> Term | None:
        """Extend ``term`` (same fence) to ``ttl`` seconds from now; ``None`` if the lease was
        lost: taken over, released, or expired."""
        ...

    def release(self, term: Term) -> None:
        """Give the lease up if ``term`` still holds it (idempotent)."""
        ...

    def peek(self) -> Term | None:
        """The current or last term, expired or not; ``None`` if never held."""
        ...


@dataclass(frozen=True)
class LeaseRecord:
    """What a file or S3 lease stores (as JSON). ``renewed`` counts renewals of the term, so
    every write changes the body (and an S3 ETag)."""

    holder: str
    fence: int
    expires_at: float
    renewed: int = 0
    released: bool = False

    def live(self, now: float) -> bool:
        """Held by someone at ``now``."""
        return not self.released and self.expires_at > now

    def term(self) -> Term:
        return Term(holder=self.holder, fence=self.fence, expires_at=self.expires_at)

    def dumps(self) -> str:
        return json.dumps(
            {
                "holder": self.holder,
                "fence": self.fence,
                "expires_at": self.expires_at,
                "renewed": self.renewed,
                "released": self.released,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, text: str | bytes) -> LeaseRecord | None:
        """The record, or ``None`` when ``text`` is not a lease record (empty, truncated,
        foreign content)."""
        try:
            data: Any = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        holder: Any = data.get("holder")
        fence: Any = data.get("fence")
        expires_at: Any = data.get("expires_at")
        renewed: Any = data.get("renewed", 0)
        if (
            not isinstance(holder, str)
            or not _is_int(fence)
            or not isinstance(expires_at, int | float)
            or isinstance(expires_at, bool)
            or not math.isfinite(expires_at)
            or not _is_int(renewed)
        ):
            return None
        return cls(
            holder=holder,
            fence=int(fence),
            expires_at=float(expires_at),
            renewed=int(renewed),
            released=data.get("released") is True,
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_holder(holder: str) -> str:
    """``holder`` if it is a usable node identity, else :class:`LeaseError`."""
    if not isinstance(holder, str) or not holder or len(holder) > MAX_HOLDER:
        raise LeaseError(
            f"lease holder must be a non-empty string of at most {MAX_HOLDER} characters "
            f"(a node identity), got {holder!r}"
        )
    return holder


def check_ttl(ttl: float) -> float:
    """``ttl`` as a float if it is a positive, finite number of seconds."""
    if (
        not isinstance(ttl, int | float)
        or isinstance(ttl, bool)
        or not math.isfinite(ttl)
        or ttl <= 0
    ):
        raise LeaseError(f"lease ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def plan_acquire(
    record: LeaseRecord | None, high_water: int, holder: str, now: float, ttl: float
) -> LeaseRecord | None:
    """The record ``acquire`` writes, or ``None`` when another holder's term is live.

    ``high_water`` is the highest fence ever handed out (the record's own fence, or more when
    the backend keeps it elsewhere too), so a new term never reuses a fence.

    >>> plan_acquire(None, 0, "a", 100.0, 30.0)
    LeaseRecord(holder='a', fence=1, expires_at=130.0, renewed=0, released=False)
    >>> old = LeaseRecord("a", 1, 130.0)
    >>> plan_acquire(old, 1, "b", 120.0, 30.0) is None
    True
    >>> plan_acquire(old, 1, "b", 131.0, 30.0).fence
    2
    """
    if record is not None and record.live(now):
        if record.holder != holder:
            return None
        # The holder asks again while its term is live: same term, extended.
        return LeaseRecord(holder, record.fence, now + ttl, record.renewed + 1)
    fence = max(high_water, record.fence if record else 0) + 1
    return LeaseRecord(holder, fence, now + ttl)


def plan_renew(
    record: LeaseRecord | None, term: Term, now: float, ttl: float
) -> LeaseRecord | None:
    """The record ``renew`` writes, or ``None`` when ``term`` is no longer the live term.

    A term that expired is over even if nobody took it: the holder must acquire a new one
    (with a new fence), because it stopped acting as holder at its deadline.
    """
    if (
        record is None
        or not record.live(now)
        or record.holder != term.holder
        or record.fence != term.fence
    ):
        return None
    return LeaseRecord(record.holder, record.fence, now + ttl, record.renewed + 1)


def plan_release(record: LeaseRecord | None, term: Term, now: float) -> LeaseRecord | None:
    """The record ``release`` writes (the fence is kept, so the next term still counts up),
    or ``None`` when there is nothing of ``term`` to release."""
    if (
        record is None
        or record.released
        or record.holder != term.holder
        or record.fence != term.fence
    ):
        return None
    return LeaseRecord(
        record.holder,
        record.fence,
        min(record.expires_at, now),
        record.renewed,
        released=True,
    )
