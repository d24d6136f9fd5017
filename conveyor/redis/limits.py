"""Concurrency-limit slots and deferred jobs (see lua/limit.lua)."""

from __future__ import annotations

from conveyor.redis.store import Store


class LimitStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def acquire(
        self, job_class: str, limit: int, *, identity: str, jid: str, raw: str, now: float
    ) -> bool:
        """Take a slot, or move the job from the working list to the deferred list."""
        k = self.store.keys
        keys = [k.limit_running(job_class), k.limit_deferred(job_class), k.working(identity)]
        args = ["acquire", limit, now, k.liveness_prefix, f"{identity}|{jid}", jid, raw]
        return bool(self.store.scripts.run("limit", keys, args))

    def release(
        self,
        job_class: str,
        limit: int,
        now: float,
        reservation_ttl: float,
        member: str = "",
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
        return int(self.store.scripts.run("limit", keys, args))

    def running(self, job_class: str) -> int:
        return int(self.store.client.zcard(self.store.keys.limit_running(job_class)))

    def deferred(self, job_class: str) -> int:
        return int(self.store.client.llen(self.store.keys.limit_deferred(job_class)))
