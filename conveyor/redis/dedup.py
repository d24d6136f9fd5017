"""Deduplication cookies (see the dedup_*.lua scripts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from conveyor.redis.calls import Call, Plan, run_sync
from conveyor.redis.keys import Keys
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
        """:meth:`claim` for a batch, in order, in one script call (a later claim in the batch
        sees the earlier ones)."""
        return run_sync(lambda: self.store, claim_plan(self.store.keys, claims))

    def start(self, digest: str, jid: str, mode: Literal["release", "running"]) -> dict[str, str]:
        """Release (until_executing) or mark running (until_executed) one job's cookie;
        returns its WAL locations."""
        return self.start_many([(digest, jid, mode)])[0]

    def start_many(
        self, starts: Sequence[tuple[str, str, Literal["release", "running"]]]
    ) -> list[dict[str, str]]:
        """:meth:`start` for ``(digest, jid, mode)`` entries, in one script call."""
        if not starts:
            return []
        keys = [self.store.keys.dedup(digest) for digest, _, _ in starts]
        args = [x for _, jid, mode in starts for x in (jid, mode)]
        return [
            {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}
            for flat in self.store.scripts.run("dedup_start", keys, args)
        ]

    def release(self, digest: str, jid: str) -> int:
        """Release an until_executed job's cookie: 1 if a twin was dropped while it ran, 0 if
        not, -1 if it did not hold the cookie."""
        return self.release_many([(digest, jid)])[0]

    def release_many(self, releases: Sequence[tuple[str, str]]) -> list[int]:
        """:meth:`release` for ``(digest, jid)`` pairs, in one script call."""
        if not releases:
            return []
        keys = [self.store.keys.dedup(digest) for digest, _ in releases]
        result = self.store.scripts.run("dedup_release", keys, [jid for _, jid in releases])
        return [int(r) for r in result]

    def holder(self, digest: str) -> str | None:
        value = self.store.client.hget(self.store.keys.dedup(digest), "jid")
        return None if value is None else str(value)

    def ttl_ms(self, digest: str) -> int:
        return int(self.store.client.pttl(self.store.keys.dedup(digest)))


def claim_plan(keys: Keys, claims: Sequence[Claim]) -> Plan[list[str | None]]:
    """:meth:`DedupStore.claim_many` as a plan, for the sync and the asyncio client alike."""
    if not claims:
        return []
    names = [keys.dedup(c.digest) for c in claims]
    args: list[str | int] = []
    for c in claims:
        args += (c.jid, max(1, c.ttl_ms), c.mode, len(c.wal_locations))
        for db, lsn in c.wal_locations.items():
            args += (db, lsn)
    holders = yield Call.script("dedup_claim", names, args)
    return [str(h) if h else None for h in holders]
