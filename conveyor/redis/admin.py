"""Redis reads and changes behind the data API (:mod:`conveyor.api`): stats, queues, the sorted
sets, processes and their work. Everything here is an admin path, so it may SCAN (never KEYS).

Changes that must be atomic with another go through Lua, run by the store's
:class:`~conveyor.redis.scripts.Scripts`: the core scripts (``zset_to_queue``, ``promote``,
``capped_add``) and the admin ones (``prune_processes``).

>>> admin = Admin(store)                                   # doctest: +SKIP
>>> admin.queue_names()                                    # doctest: +SKIP
['default', 'mail']
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis

from conveyor.redis.embedded import stop_server as stop_embedded_server
from conveyor.redis.keys import glob_escape
from conveyor.redis.store import Store, ZSetName

#: Re-exported so the layers above can catch Redis failures without importing redis.
RedisError = redis.RedisError

#: Fields of a process hash, in the order :meth:`Admin.process_states` returns them.
PROCESS_FIELDS = ("info", "busy", "beat", "quiet", "rss", "rtt_us", "health")


@dataclass(frozen=True, slots=True)
class Counters:
    """One pipelined read of the cheap totals (Sidekiq's ``fetch_stats_fast!``)."""

    processed: int
    failed: int
    scheduled_size: int
    retry_size: int
    dead_size: int
    interrupted_size: int
    processes_size: int
    #: The oldest job of the ``default`` queue (its right end), or ``None`` when it is empty.
    default_oldest: str | None


class Admin:
    """Admin operations bound to one :class:`Store` (its client and key prefix).

    >>> admin = Admin(app.store)                               # doctest: +SKIP
    >>> admin.zset_size("retry")                               # doctest: +SKIP
    3
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    # -- stats ----------------------------------------------------------------------------------
    def counters(self) -> Counters:
        """Totals and set sizes in one round trip."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.get(k.stat("processed"))
        pipe.get(k.stat("failed"))
        for key in (k.schedule, k.retry, k.dead, k.interrupted):
            pipe.zcard(key)
        pipe.scard(k.processes)
        pipe.lrange(k.queue("default"), -1, -1)
        processed, failed, sched, retry, dead, interrupted, procs, tail = pipe.execute()
        return Counters(
            processed=int(processed or 0),
            failed=int(failed or 0),
            scheduled_size=int(sched),
            retry_size=int(retry),
            dead_size=int(dead),
            interrupted_size=int(interrupted),
            processes_size=int(procs),
            default_oldest=str(tail[0]) if tail else None,
        )

    def daily(self, stat: Literal["processed", "failed"], days: Sequence[str]) -> list[int]:
        """Values of ``stat:<stat>:<day>`` for each ``YYYY-MM-DD`` day (0 when missing)."""
        if not days:
            return []
        values = self.client.mget([self.keys.stat_daily(stat, day) for day in days])
        return [int(v or 0) for v in values]

    def reset_stats(self, stats: Sequence[Literal["processed", "failed"]]) -> None:
        """Set the all-time counters named in ``stats`` back to 0 (daily history is kept)."""
        if stats:
            self.client.mset({self.keys.stat(s): 0 for s in stats})

    # -- queues ---------------------------------------------------------------------------------
    def queue_names(self) -> list[str]:
        """Names in the ``queues`` set, sorted."""
        return sorted(str(n) for n in self.client.sscan_iter(self.keys.queues))

    def queue_sizes(self, names: Sequence[str]) -> list[int]:
        """Lengths of the named queues, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(self.keys.queue(name))
        return [int(n) for n in pipe.execute()]

    def queue_range(self, name: str, start: int, stop: int) -> list[str]:
        """Payloads from index ``start`` to ``stop`` (inclusive; 0 is the newest job)."""
        return [str(j) for j in self.client.lrange(self.keys.queue(name), start, stop)]

    def queue_oldest(self, name: str) -> str | None:
        """The job that runs next (the right end of the list), or ``None``."""
        tail = self.client.lrange(self.keys.queue(name), -1, -1)
        return str(tail[0]) if tail else None

    def queue_remove(self, name: str, raw: str) -> bool:
        """Remove one copy of ``raw`` from the queue."""
        return bool(self.client.lrem(self.keys.queue(name), 1, raw))

    def queue_clear(self, name: str) -> int:
        """Delete the queue and forget its name; returns how many jobs it held."""
        pipe = self.client.pipeline(transaction=True)
        pipe.llen(self.keys.queue(name))
        pipe.unlink(self.keys.queue(name))
        pipe.srem(self.keys.queues, name)
        size, _, _ = pipe.execute()
        return int(size)

    # -- sorted sets ----------------------------------------------------------------------------
    def zset_key(self, zset: ZSetName) -> str:
        """The key of a sorted set. Example: ``admin.zset_key("dead")`` -> ``'dead'``."""
        return self.store.zset_key(zset)

    def zset_size(self, zset: ZSetName) -> int:
        """Entries in a sorted set."""
        return int(self.client.zcard(self.zset_key(zset)))

    def trimmed(self) -> dict[str, int]:
        """Entries the capped sets (``dead``, ``interrupted``) dropped, ever, by set."""
        names = ("dead", "interrupted")
        values = self.client.mget([self.keys.trimmed(name) for name in names])
        return {name: int(value or 0) for name, value in zip(names, values, strict=True)}

    def zset_range(
        self, zset: ZSetName, start: int, stop: int, *, reverse: bool = False
    ) -> list[tuple[str, float]]:
        """``(payload, score)`` by rank, lowest score first (highest first with ``reverse``)."""
        rows: list[Any] = self.client.zrange(
            self.zset_key(zset), start, stop, desc=reverse, withscores=True
        )
        return [(str(row[0]), float(row[1])) for row in rows]

    def zset_scan(self, zset: ZSetName, contains: str) -> Iterator[tuple[str, float]]:
        """``(payload, score)`` of every entry whose text contains ``contains`` (ZSCAN)."""
        match = f"*{glob_escape(contains)}*"
        for raw, score in self.client.zscan_iter(self.zset_key(zset), match=match, count=500):
            yield str(raw), float(score)

    def zset_remove(self, zset: ZSetName, raw: str) -> bool:
        """Remove the entry stored as ``raw``; False if it was not there."""
        return bool(self.client.zrem(self.zset_key(zset), raw))

    def zset_clear(self, zset: ZSetName) -> int:
        """Delete the whole set; returns how many entries it held."""
        pipe = self.client.pipeline(transaction=True)
        pipe.zcard(self.zset_key(zset))
        pipe.unlink(self.zset_key(zset))
        size, _ = pipe.execute()
        return int(size)

    def zset_to_queue(self, zset: ZSetName, raw: str, payload: str, queue: str) -> bool:
        """Atomically take ``raw`` out of ``zset`` and push ``payload`` onto ``queue``."""
        k = self.keys
        moved = self.store.scripts.run(
            "zset_to_queue", [self.zset_key(zset), k.queues, k.queue(queue)], [raw, payload, queue]
        )
        return bool(moved)

    def zset_to_queues(self, zset: ZSetName, moves: Sequence[tuple[str, str, str]]) -> int:
        """Move many ``(raw, queue, payload)`` entries to their queues in one script call
        (each pop and push together, as the scheduled poller does); returns how many moved."""
        return self.store.promote(zset, moves)

    def zset_kill(
        self,
        zset: ZSetName,
        raw: str,
        payload: str,
        *,
        now: float,
        dead_max: int,
        dead_cutoff: float,
    ) -> bool:
        """Atomically move ``raw`` from ``zset`` to the capped dead set as ``payload``."""
        return self.store.add_capped(
            "dead", now, payload, dead_max, dead_cutoff, source=("zset", self.zset_key(zset), raw)
        )

    # -- processes ------------------------------------------------------------------------------
    def process_identities(self) -> list[str]:
        """Identities in the ``processes`` set, sorted."""
        return sorted(str(i) for i in self.client.sscan_iter(self.keys.processes))

    def prune_processes(self) -> int:
        """Drop identities whose process hash expired; returns how many were dropped."""
        identities = self.process_identities()
        if not identities:
            return 0
        keys = [self.keys.processes, *(self.keys.process(i) for i in identities)]
        return int(self.store.scripts.run("prune_processes", keys, list(identities)))

    def process_states(self, identities: Sequence[str]) -> list[list[str | None]]:
        """The :data:`PROCESS_FIELDS` of each process hash (all ``None`` once it expired)."""
        pipe = self.client.pipeline(transaction=False)
        for identity in identities:
            pipe.hmget(self.keys.process(identity), list(PROCESS_FIELDS))
        return [list(row) for row in pipe.execute()]

    def process_work(self, identities: Sequence[str]) -> list[dict[str, str]]:
        """What each live process runs: thread id -> work JSON (``{}`` once its hash expired).

        Reads ``<identity>:work`` (Conveyor, Sidekiq 7) and falls back to ``<identity>:workers``
        (what a Ruby Sidekiq 6 process writes).
        """
        pipe = self.client.pipeline(transaction=False)
        for identity in identities:
            pipe.exists(self.keys.process(identity))
            pipe.hgetall(self.keys.work(identity))
            pipe.hgetall(self.keys.workers(identity))
        replies = pipe.execute()
        out: list[dict[str, str]] = []
        for i in range(0, len(replies), 3):
            exists, work, workers = replies[i : i + 3]
            chosen = (work or workers) if exists else {}
            out.append({str(t): str(doc) for t, doc in chosen.items()})
        return out

    def signal(self, identity: str, sig: Literal["TSTP", "TERM"]) -> None:
        """Ask a process to quiet (TSTP) or stop (TERM) at its next heartbeat."""
        self.store.send_signal(identity, sig)

    # -- namespaces -----------------------------------------------------------------------------
    def purge_prefix(self) -> int:
        """Delete every key under this store's prefix (SCAN + UNLINK); refuses without a prefix.

        Used by ``conveyor demo`` to leave nothing behind under its private prefix.
        """
        prefix = self.keys.prefix
        if not prefix:
            raise ValueError("refusing to delete keys without a key prefix: it would wipe Redis")
        deleted = 0
        batch: list[str] = []
        for key in self.client.scan_iter(match=self.keys.namespace_pattern(), count=500):
            batch.append(str(key))
            if len(batch) >= 500:
                deleted += int(self.client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(self.client.unlink(*batch))
        return deleted


__all__ = [
    "PROCESS_FIELDS",
    "Admin",
    "Counters",
    "RedisError",
    "ZSetName",
    "glob_escape",
    "stop_embedded_server",
]
