"""Concurrency-limit slots and deferred jobs (see lua/limit.lua)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

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


class LimitStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def acquire(
        self, job_class: str, limit: int, *, identity: str, jid: str, raw: str, now: float
    ) -> bool:
        """Take a slot, or move the job from the working list to the deferred list."""
        return self.acquire_many([Acquire(job_class, limit, identity, jid, raw)], now)[0]

    def acquire_many(self, requests: Sequence[Acquire], now: float) -> list[bool]:
        """:meth:`acquire` for a batch, in order, in one round trip."""
        k = self.store.keys
        pipe = self.store.client.pipeline(transaction=False)
        for q in requests:
            keys = [
                k.limit_running(q.job_class),
                k.limit_deferred(q.job_class),
                k.working(q.identity),
            ]
            args = ["acquire", q.limit, now, k.liveness_prefix, q.member, q.jid, q.raw]
            self.store.scripts.run("limit", keys, args, pipe)
        return [bool(r) for r in pipe.execute()]

    def release_many(
        self, slots: Sequence[tuple[str, int, str]], now: float, reservation_ttl: float
    ) -> int:
        """Free ``(job_class, limit, member)`` slots and resume deferred jobs, one round trip."""
        if not slots:
            return 0
        pipe = self.store.client.pipeline(transaction=False)
        for job_class, limit, member in slots:
            self.release(job_class, limit, now, reservation_ttl, member, client=pipe)
        return sum(int(r) for r in pipe.execute())

    def release(
        self,
        job_class: str,
        limit: int,
        now: float,
        reservation_ttl: float,
        member: str = "",
        *,
        client: redis.client.Pipeline | None = None,
    ) -> int:
        """Free ``member``'s slot (if given) and resume deferred jobs into the free slots."""
        k = self.store.keys
        keys = [k.limit_running(job_class), k.limit_deferred(job_class), k.queues]
        args = [
            "release" if member else "resume",
            limit,
            now,
            k.liveness_prefix,
            member,
            now + reservation_ttl,
            k.queue(""),
        ]
        result = self.store.scripts.run("limit", keys, args, client)
        return 0 if client is not None else int(result)

    def running(self, job_class: str) -> int:
        return int(self.store.client.zcard(self.store.keys.limit_running(job_class)))

    def deferred(self, job_class: str) -> int:
        return int(self.store.client.llen(self.store.keys.limit_deferred(job_class)))
