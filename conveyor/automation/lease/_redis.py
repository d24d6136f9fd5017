"""The ``redis`` lease: a hash and a fence counter in the shared Redis, changed only by Lua
scripts (:mod:`conveyor.redis.leases`).

Expiry is judged against the Redis server's ``TIME`` inside the scripts, so node clocks never
matter for who may take over; ``Term.expires_at`` is in the server's clock. The lease is as
available as the Redis every node already depends on, and as durable: a failover to a replica
that missed the last writes can forget a renewal (the holder then loses the term at its next
renew) but the fence counter only ever moves up within one server's history.

>>> lease = RedisLease(app.store, "migrate")                       # doctest: +SKIP
>>> lease.acquire("node-a", 300)                                   # doctest: +SKIP
Term(holder='node-a', fence=1, expires_at=1700000300.0)
"""

from __future__ import annotations

import math

import redis

from conveyor.automation.lease._base import Term, check_holder, check_ttl
from conveyor.errors import LeaseError
from conveyor.redis.leases import LeaseState, LeaseStore
from conveyor.redis.store import Store


def _term(state: LeaseState) -> Term:
    return Term(holder=state.holder, fence=state.fence, expires_at=state.expires_ms / 1000)


def _ttl_ms(ttl: float) -> int:
    return max(1, math.ceil(check_ttl(ttl) * 1000))


class RedisLease:
    """A lease held in Redis under ``name`` (the workflow name by default)."""

    def __init__(self, store: Store, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise LeaseError(f"redis lease name must be a non-empty string, got {name!r}")
        self.name = name
        self.description = f"redis:{name}"
        self.leases = LeaseStore(store)

    def __repr__(self) -> str:
        return f"RedisLease({self.name!r})"

    def acquire(self, holder: str, ttl: float) -> Term | None:
        """A new term if free, released or expired (by the server's clock); a renewal if
        ``holder`` holds it; ``None`` if another live holder has it."""
        check_holder(holder)
        ttl_ms = _ttl_ms(ttl)
        try:
            state = self.leases.acquire(self.name, holder, ttl_ms)
        except redis.RedisError as exc:
            raise LeaseError(f"{self.description}: Redis failed: {exc}") from exc
        return _term(state) if state is not None and state.ok else None

    def renew(self, term: Term, ttl: float) -> Term | None:
        """Extend ``term`` (same fence); ``None`` if it was taken over, released or expired."""
        ttl_ms = _ttl_ms(ttl)
        try:
            state = self.leases.renew(self.name, term.holder, term.fence, ttl_ms)
        except redis.RedisError as exc:
            raise LeaseError(f"{self.description}: Redis failed: {exc}") from exc
        return None if state is None else _term(state)

    def release(self, term: Term) -> None:
        """Mark ``term`` released if it is still current (idempotent)."""
        try:
            self.leases.release(self.name, term.holder, term.fence)
        except redis.RedisError as exc:
            raise LeaseError(f"{self.description}: Redis failed: {exc}") from exc

    def peek(self) -> Term | None:
        """The current or last term, expired or not; ``None`` if never held."""
        try:
            state = self.leases.peek(self.name)
        except redis.RedisError as exc:
            raise LeaseError(f"{self.description}: Redis failed: {exc}") from exc
        return None if state is None else _term(state)
