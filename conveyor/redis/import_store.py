"""Imports in Redis (SPEC IMP-*): the state of each import, the pending set that counts each
stage down, progress pointers, per-record failures and the import cache.

One import is the hash ``conveyor:import:{id}`` (importer, status running|finished|failed,
stage, mode, options JSON, created_at, progressed_at, finished_at, error, and per stage
``total:{stage}``, ``done:{stage}``, ``failed:{stage}``, ``advanced:{stage}``), with the sets
``pending:{stage}`` and ``seen:{stage}``, the hash of cursors and the hash of failures. All of
them expire ``IMPORT_TTL`` after the import was created. Every change that reads and writes is
one ``imp_*.lua`` script.

>>> store = ImportStore(app.store)                                 # doctest: +SKIP
>>> store.pending("4f2a...", "issues", ["101", "102"])             # doctest: +SKIP
[True, True]
>>> store.done("4f2a...", "issues", "101", now=time.time())        # doctest: +SKIP
'counted'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from conveyor.redis.store import Store

#: An import's keys live this long after it was created (7 days).
IMPORT_TTL = 7 * 24 * 3600
#: The token a stage job holds in its own stage's pending set until it has enqueued everything.
STAGE_TOKEN = "~stage"

DoneOutcome = Literal["inactive", "duplicate", "counted", "advanced", "finished"]


@dataclass(frozen=True, slots=True)
class StagePush:
    """The job of the next stage, pushed by the script that advances the import."""

    stage: str
    queue: str
    payload: str


class ImportStore:
    """Redis operations of the import toolkit, bound to one store (client + key prefix)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self.client = store.client

    # -- lifecycle ------------------------------------------------------------------------------
    def create(
        self, import_id: str, fields: Mapping[str, str], first: StagePush, *, now: float
    ) -> bool:
        """Create an import and push its first stage job in one step; False if the id exists."""
        k = self.keys
        flat: list[str] = []
        for name, value in {**fields, "stage": first.stage}.items():
            flat += (name, value)
        created = self.store.scripts.run(
            "imp_create",
            [
                k.import_state(import_id),
                k.imports,
                k.imports_running,
                k.import_pending(import_id, first.stage),
                k.queues,
                k.queue(first.queue),
            ],
            [import_id, now, IMPORT_TTL, first.queue, first.payload, *flat],
        )
        return bool(created)

    def pending(
        self, import_id: str, stage: str, tokens: Sequence[str], *, now: float
    ) -> list[bool]:
        """Register record tokens of a stage; per token, whether its job must be enqueued.
        Empty when the import is not running."""
        if not tokens:
            return []
        k = self.keys
        result = self.store.scripts.run(
            "imp_pending",
            [
                k.import_state(import_id),
                k.import_pending(import_id, stage),
                k.import_seen(import_id, stage),
            ],
            [stage, now, IMPORT_TTL, *tokens],
        )
        return [bool(x) for x in result]

    def done_bulk(self, import_id: str, stage: str, tokens: Sequence[str], *, now: float) -> int:
        """Count records a stage saved in bulk (registered with :meth:`pending`) as done, each
        once; returns how many this call counted."""
        if not tokens:
            return 0
        k = self.keys
        keys = [k.import_state(import_id), k.import_pending(import_id, stage)]
        return int(self.store.scripts.run("imp_done_bulk", keys, [stage, now, *tokens]))

    def done(
        self,
        import_id: str,
        stage: str,
        token: str,
        *,
        now: float,
        failed: bool = False,
        next_stage: StagePush | None = None,
    ) -> DoneOutcome:
        """A unit of ``stage`` finished; the call that empties the stage pushes ``next_stage``
        (or, with none, marks the import finished)."""
        k = self.keys
        nxt = next_stage
        outcome = self.store.scripts.run(
            "imp_done",
            [
                k.import_state(import_id),
                k.import_pending(import_id, stage),
                k.imports_running,
                k.import_pending(import_id, nxt.stage if nxt else stage),
                k.queues,
                k.queue(nxt.queue if nxt else "default"),
            ],
            [
                import_id,
                stage,
                token,
                now,
                1 if failed else 0,
                nxt.stage if nxt else "",
                nxt.queue if nxt else "",
                nxt.payload if nxt else "",
                IMPORT_TTL,
            ],
        )
        return cast(DoneOutcome, outcome)

    def fail(
        self, import_ids: Sequence[str], message: str, *, now: float, cutoff: float | None = None
    ) -> list[str]:
        """Fail running imports (only those whose progress is not newer than ``cutoff``, when
        given); returns the ids this call failed."""
        if not import_ids:
            return []
        k = self.keys
        failed = self.store.scripts.run(
            "imp_fail",
            [k.imports_running, *(k.import_state(i) for i in import_ids)],
            ["" if cutoff is None else cutoff, now, message, *import_ids],
        )
        return [str(x) for x in failed]

    def stalled(self, cutoff: float, limit: int = 500) -> list[str]:
        """Running imports whose progress last moved at or before ``cutoff``."""
        ids = self.client.zrangebyscore(self.keys.imports_running, "-inf", cutoff, 0, limit)
        return [_text(i) for i in ids]

    def touch(self, import_id: str, *, now: float) -> None:
        """Record that the import is alive and moving (liveness refresh)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.zadd(k.imports_running, {import_id: now}, xx=True)
        pipe.hset(k.import_state(import_id), "progressed_at", now)
        pipe.execute()

    def increment(self, import_id: str, field: str, by: int = 1) -> None:
        """Add ``by`` to a counter field of the import hash."""
        self.client.hincrby(self.keys.import_state(import_id), field, by)

    # -- reading --------------------------------------------------------------------------------
    def get(self, import_id: str) -> dict[str, str] | None:
        """The import hash, or ``None``."""
        raw = self.client.hgetall(self.keys.import_state(import_id))
        if not raw:
            return None
        return {_text(a): _text(b) for a, b in raw.items()}

    def ids(self, offset: int = 0, count: int = 50) -> list[str]:
        """Import ids, newest first."""
        found = self.client.zrevrange(self.keys.imports, offset, offset + count - 1)
        return [_text(i) for i in found]

    def pending_count(self, import_id: str, stage: str) -> int:
        """Tokens of a stage not finished yet."""
        return int(self.client.scard(self.keys.import_pending(import_id, stage)))

    # -- progress pointers ----------------------------------------------------------------------
    def cursor(self, import_id: str, name: str) -> str | None:
        """A saved progress pointer, or ``None``."""
        value = self.client.hget(self.keys.import_cursors(import_id), name)
        return None if value is None else _text(value)

    def save_cursor(self, import_id: str, name: str, value: str, *, now: float) -> None:
        """Save a cursor; saving one is progress, so it also refreshes the import's liveness."""
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(k.import_cursors(import_id), name, value)
        pipe.expire(k.import_cursors(import_id), IMPORT_TTL)
        pipe.zadd(k.imports_running, {import_id: now}, xx=True)
        pipe.hset(k.import_state(import_id), "progressed_at", now)
        pipe.execute()

    # -- failures -------------------------------------------------------------------------------
    def record_failure(self, import_id: str, stage: str, record_id: str, failure: str) -> None:
        """Store one record's failure (JSON); a redelivered record overwrites its own entry."""
        key = self.keys.import_failures(import_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, f"{stage}|{record_id}", failure)
        pipe.expire(key, IMPORT_TTL)
        pipe.execute()

    def failures(self, import_id: str) -> dict[str, str]:
        """Every recorded failure of an import, by ``stage|record id``."""
        raw = self.client.hgetall(self.keys.import_failures(import_id))
        return {_text(a): _text(b) for a, b in raw.items()}

    # -- cache ----------------------------------------------------------------------------------
    def cache_get(self, namespace: str, key: str) -> dict[str, Any] | None:
        """A cache entry (value and expiry), or ``None``."""
        raw = self.client.get(self.keys.import_cache(namespace, key))
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            return None
        return entry if isinstance(entry, dict) else None

    def cache_set(
        self, namespace: str, key: str, entry: Mapping[str, Any], *, redis_ttl: int
    ) -> None:
        """Store a cache entry; Redis drops it after ``redis_ttl`` seconds."""
        self.client.set(self.keys.import_cache(namespace, key), json.dumps(entry), ex=redis_ttl)

    def cache_delete(self, namespace: str, key: str) -> None:
        """Drop a cache entry."""
        self.client.delete(self.keys.import_cache(namespace, key))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
