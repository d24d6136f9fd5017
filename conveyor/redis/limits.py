"""Concurrency-limit slots and deferred jobs (see lua/limit.lua), a batch per script call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.redis.store import Store


@dataclass(frozen=True, slots=True)
class Acquire:
    job_class: str
    limit: int
    identity: str
    jid: str
    raw: str

    @property
    def member(self) -> str:
        return f"{self.identity}|{self.jid}"


#: What :meth:`LimitStore.acquire_many` says per job.
DEFERRED, TAKEN, TAKEN_SCARCE = 0, 1, 2


class LimitStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def acquire(
        self, job_class: str, limit: int, *, identity: str, jid: str, raw: str, now: float
    ) -> bool:
        """Take a slot, or move the job from the working list to the deferred list."""
        return self.acquire_many([Acquire(job_class, limit, identity, jid, raw)], now)[0] > 0

    def acquire_many(self, requests: Sequence[Acquire], now: float) -> list[int]:
        """:meth:`acquire` for a batch, in order, in one script call: per job
        :data:`DEFERRED`, :data:`TAKEN`, or :data:`TAKEN_SCARCE` (taken, and jobs wait for
        slots: the class uses 90 % of its limit or more, or the job was resumed)."""
        if not requests:
            return []
        k = self.store.keys
        keys: list[str] = []
        args: list[str | int | float] = ["acquire", now, k.liveness_prefix]
        for q in requests:
            keys += (
                k.limit_running(q.job_class),
                k.limit_deferred(q.job_class),
                k.working(q.identity),
            )
            args += (q.limit, q.member, q.jid, q.raw)
        return [int(r) for r in self.store.scripts.run("limit", keys, args)]

    def release(
        self, job_class: str, limit: int, now: float, reservation_ttl: float, member: str = ""
    ) -> int:
        """Free ``member``'s slot (if given) and resume deferred jobs into the free slots;
        returns how many were resumed."""
        return self.release_many([(job_class, limit, member)], now, reservation_ttl)

    def release_many(
        self, slots: Sequence[tuple[str, int, str]], now: float, reservation_ttl: float
    ) -> int:
        """Free ``(job_class, limit, member)`` slots (member ``''``: only resume), resuming
        deferred jobs, in one script call."""
        if not slots:
            return 0
        k = self.store.keys
        keys: list[str] = []
        args: list[str | int | float] = [
            "release",
            now,
            k.liveness_prefix,
            now + reservation_ttl,
            k.queue(""),
        ]
        for job_class, limit, member in slots:
            keys += (k.limit_running(job_class), k.limit_deferred(job_class), k.queues)
            args += (limit, member)
        return sum(int(r) for r in self.store.scripts.run("limit", keys, args))

    def running(self, job_class: str) -> int:
        return int(self.store.client.zcard(self.store.keys.limit_running(job_class)))

    def deferred(self, job_class: str) -> int:
        return int(self.store.client.llen(self.store.keys.limit_deferred(job_class)))
