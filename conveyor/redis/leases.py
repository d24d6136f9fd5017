"""Redis-held leader leases (issue #6): one hash per lease and a fence counter, changed only
by the ``lease_*.lua`` scripts.

Expiry is judged inside the scripts against the Redis server's ``TIME``, so every node sees
the same clock; the node only needs its own monotonic clock to stop acting before the term
ends. Times cross the wire as integer milliseconds.

>>> leases = LeaseStore(store)                                   # doctest: +SKIP
>>> leases.acquire("wf", "node-a", 30_000)                       # doctest: +SKIP
LeaseState(ok=True, holder='node-a', fence=1, expires_ms=1700000030000)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.redis.store import Store


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease's term as a script returned it. ``ok``: the call got (or kept) the term;
    ``released``: the term was given up (only from :meth:`LeaseStore.peek`)."""

    ok: bool
    holder: str
    fence: int
    expires_ms: int
    released: bool = False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class LeaseStore:
    """The Redis side of :class:`~conveyor.automation.lease.RedisLease`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys

    def acquire(self, name: str, holder: str, ttl_ms: int) -> LeaseState | None:
        """A new term for ``holder`` if the lease is free, released or expired (fence + 1), the
        renewed term if ``holder`` holds it; else the other holder's live term (``ok=False``)."""
        k = self.keys
        reply = self.store.scripts.run(
            "lease_acquire", [k.lease(name), k.lease_fence(name)], [holder, ttl_ms]
        )
        return self._state(reply)

    def renew(self, name: str, holder: str, fence: int, ttl_ms: int) -> LeaseState | None:
        """The renewed term, or ``None`` if ``(holder, fence)`` is not the live term."""
        reply = self.store.scripts.run(
            "lease_renew", [self.keys.lease(name)], [holder, fence, ttl_ms]
        )
        return self._state(reply)

    def release(self, name: str, holder: str, fence: int) -> bool:
        """Give up ``(holder, fence)`` if it is the current term; True if this call did."""
        reply = self.store.scripts.run("lease_release", [self.keys.lease(name)], [holder, fence])
        return int(reply) == 1

    def peek(self, name: str) -> LeaseState | None:
        """The current or last term (expired or not), ``None`` if the lease was never held."""
        raw = self.store.client.hmget(
            self.keys.lease(name), ["holder", "fence", "expires_ms", "released"]
        )
        holder, fence, expires, released = (None if v is None else _text(v) for v in raw)
        if holder is None or fence is None or expires is None:
            return None
        return LeaseState(
            ok=False,
            holder=holder,
            fence=int(fence),
            expires_ms=int(float(expires)),
            released=released == "1",
        )

    def server_time_ms(self) -> int:
        """The Redis server's clock, in milliseconds (what expiry is judged against)."""
        seconds, micros = self.store.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    @staticmethod
    def _state(reply: Any) -> LeaseState | None:
        if not reply or (int(reply[0]) == 0 and len(reply) == 1):
            return None
        return LeaseState(
            ok=int(reply[0]) == 1,
            holder=_text(reply[1]),
            fence=int(_text(reply[2])),
            expires_ms=int(float(_text(reply[3]))),
        )
