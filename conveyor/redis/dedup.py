"""Deduplication cookies (see the dedup_*.lua scripts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from conveyor.redis.store import Store


@dataclass(frozen=True, slots=True)
class Claim:
    digest: str
    jid: str
    ttl_ms: int
    mode: Literal["drop", "mark"]
    wal_locations: Mapping[str, str]


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
        return self.claim_many([Claim(digest, jid, ttl_ms, mode, wal_locations)])[0]

    def claim_many(self, claims: Sequence[Claim]) -> list[str | None]:
        """:meth:`claim` for a batch, in order, in one round trip (each claim is atomic; a
        later claim in the batch sees the earlier ones)."""
        pipe = self.store.client.pipeline(transaction=False)
        for c in claims:
            args: list[str | int] = [c.jid, max(1, c.ttl_ms), c.mode]
            for db, lsn in c.wal_locations.items():
                args += (db, lsn)
            self.store.scripts.run("dedup_claim", [self.store.keys.dedup(c.digest)], args, pipe)
        return [str(holder) if int(dup) else None for dup, holder in pipe.execute()]

    def start(self, digest: str, jid: str, mode: Literal["release", "running"]) -> dict[str, str]:
        flat = self.store.scripts.run("dedup_start", [self.store.keys.dedup(digest)], [jid, mode])
        return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}

    def start_many(
        self, starts: Sequence[tuple[str, str, Literal["release", "running"]]]
    ) -> list[dict[str, str]]:
        """:meth:`start` for ``(digest, jid, mode)`` entries, in one round trip."""
        pipe = self.store.client.pipeline(transaction=False)
        for digest, jid, mode in starts:
            self.store.scripts.run(
                "dedup_start", [self.store.keys.dedup(digest)], [jid, mode], pipe
            )
        return [
            {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
            for flat in pipe.execute()
        ]

    def release_many(self, releases: Sequence[tuple[str, str]]) -> list[int]:
        """:meth:`release` for ``(digest, jid)`` pairs, in one round trip."""
        pipe = self.store.client.pipeline(transaction=False)
        for digest, jid in releases:
            self.store.scripts.run("dedup_release", [self.store.keys.dedup(digest)], [jid], pipe)
        return [int(r) for r in pipe.execute()]

    def release(self, digest: str, jid: str) -> int:
        return int(self.store.scripts.run("dedup_release", [self.store.keys.dedup(digest)], [jid]))

    def holder(self, digest: str) -> str | None:
        value = self.store.client.hget(self.store.keys.dedup(digest), "jid")
        return None if value is None else str(value)

    def ttl_ms(self, digest: str) -> int:
        return int(self.store.client.pttl(self.store.keys.dedup(digest)))
