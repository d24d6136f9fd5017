"""Deduplication cookies (see the dedup_*.lua scripts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from conveyor.redis.store import Store


class DedupStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def claim(
        self,
        digest: str,
        jid: str,
        ttl_ms: int,
        mode: Literal["drop", "mark"],
        wal_locations: Mapping[str, str],
    ) -> str | None:
        """Claim the cookie for ``jid``; returns the holder's jid if another job holds it."""
        args: list[str | int] = [jid, max(1, ttl_ms), mode]
        for db, lsn in wal_locations.items():
            args += (db, lsn)
        dup, holder = self.store.scripts.run("dedup_claim", [self.store.keys.dedup(digest)], args)
        return str(holder) if int(dup) else None

    def start(self, digest: str, jid: str, mode: Literal["release", "running"]) -> dict[str, str]:
        flat = self.store.scripts.run("dedup_start", [self.store.keys.dedup(digest)], [jid, mode])
        return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}

    def release(self, digest: str, jid: str) -> int:
        return int(self.store.scripts.run("dedup_release", [self.store.keys.dedup(digest)], [jid]))

    def holder(self, digest: str) -> str | None:
        value = self.store.client.hget(self.store.keys.dedup(digest), "jid")
        return None if value is None else str(value)

    def ttl_ms(self, digest: str) -> int:
        return int(self.store.client.pttl(self.store.keys.dedup(digest)))
