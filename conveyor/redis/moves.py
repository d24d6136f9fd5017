"""Moving a queue's jobs from one store to another (``conveyor compat migrate-queue
--to-store``): the Redis side. Two Redis instances cannot share a transaction, so each chunk
is first taken, atomically, into a moving list (or set) of the run in the source store
(lua/move_take.lua, lua/move_take_set.lua), then written to the destination, and only then
deleted from the moving list. A run that dies in between leaves its moving lists registered;
the next run writes them again (at least once: a job can arrive twice, never zero times).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from conveyor.redis.store import Store, ZSetName


class MoveStore:
    """One store's side of a move (source or destination).

    >>> taken = MoveStore(source).take_queue("reports", run, destination, 500)  # doctest: +SKIP
    >>> MoveStore(target).put_jobs("reports", taken)                            # doctest: +SKIP
    >>> MoveStore(source).confirmed_jobs("reports", run)                        # doctest: +SKIP
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    # -- reading ----------------------------------------------------------------------------------
    def queue_length(self, queue: str) -> int:
        return int(self.client.llen(self.keys.queue(queue)))

    def set_length(self, zset: ZSetName) -> int:
        return int(self.client.zcard(self.store.zset_key(zset)))

    def scan_set(self, zset: ZSetName, count: int) -> Iterator[str]:
        """Every entry of a sorted set (ZSCAN sees each entry present throughout at least once)."""
        for raw, _ in self.client.zscan_iter(self.store.zset_key(zset), count=count):
            yield str(raw)

    def deferred_lists(self) -> list[str]:
        """The keys of the lists where jobs of concurrency-limited classes wait for a slot."""
        names = self.client.sscan_iter(self.keys.limit_registry, count=500)
        return [self.keys.limit_deferred(str(name)) for name in names]

    def read_list(self, key: str, count: int) -> list[str]:
        """Every entry of a list, oldest (the right end) first, ``count`` per read. Entries
        added or removed meanwhile may be missed or seen twice; taking them is exact."""
        entries: list[str] = []
        start = 0
        while True:
            chunk = self.client.lrange(key, start, start + count - 1)
            entries += [str(x) for x in chunk]
            if len(chunk) < count:
                return list(reversed(entries))
            start += count

    def unfinished(self, queue: str) -> dict[str, str]:
        """Runs that moved part of ``queue`` and did not finish: run id -> destination JSON."""
        found = self.client.hgetall(self.keys.moving(queue))
        return {str(k): str(v) for k, v in found.items()}

    def moving_jobs(self, queue: str, run: str) -> list[str]:
        """The jobs a run took off ``queue`` and has not confirmed, oldest first."""
        return [
            str(x) for x in reversed(self.client.lrange(self.keys.moving_list(queue, run), 0, -1))
        ]

    def moving_entries(self, queue: str, run: str, zset: ZSetName) -> list[tuple[str, float]]:
        """The sorted-set entries a run took and has not confirmed, with their scores."""
        key = self.keys.moving_set(queue, run, zset)
        rows: list[Any] = self.client.zrange(key, 0, -1, withscores=True)
        return [(str(row[0]), float(row[1])) for row in rows]

    # -- taking (source) --------------------------------------------------------------------------
    def take_queue(self, queue: str, run: str, destination: str, count: int) -> list[str]:
        """Take up to ``count`` jobs off the consuming end of ``queue`` into the run's moving
        list; returns them oldest first."""
        k = self.keys
        keys = [k.queue(queue), k.moving_list(queue, run), k.moving(queue)]
        taken = self.store.scripts.run("move_take", keys, [count, run, destination])
        return [str(x) for x in taken]

    def take_set(
        self, zset: ZSetName, queue: str, run: str, destination: str, raws: Sequence[str]
    ) -> list[tuple[str, float]]:
        """Take the entries of ``raws`` still in ``zset`` into the run's moving set."""
        if not raws:
            return []
        k = self.keys
        keys = [self.store.zset_key(zset), k.moving_set(queue, run, zset), k.moving(queue)]
        flat = self.store.scripts.run("move_take_set", keys, [run, destination, *raws])
        return [(str(flat[i]), float(flat[i + 1])) for i in range(0, len(flat), 2)]

    def take_list(
        self, key: str, queue: str, run: str, destination: str, raws: Sequence[str]
    ) -> list[str]:
        """Take the entries of ``raws`` (oldest first) still in list ``key`` into the run's
        moving list, the one :meth:`take_queue` fills; returns those taken, oldest first."""
        if not raws:
            return []
        keys = [key, self.keys.moving_list(queue, run), self.keys.moving(queue)]
        return [
            str(x)
            for x in self.store.scripts.run("move_take_list", keys, [run, destination, *raws])
        ]

    def confirmed_jobs(self, queue: str, run: str) -> None:
        """The run's moving list reached the destination: drop it."""
        self.client.delete(self.keys.moving_list(queue, run))

    def confirmed_entries(self, queue: str, run: str, zset: ZSetName) -> None:
        self.client.delete(self.keys.moving_set(queue, run, zset))

    def finish(self, queue: str, run: str, zsets: Sequence[ZSetName]) -> None:
        """Forget a run whose every moving list and set reached the destination."""
        k = self.keys
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(k.moving_list(queue, run), *(k.moving_set(queue, run, z) for z in zsets))
        pipe.hdel(k.moving(queue), run)
        pipe.execute()

    def forget_queue_if_empty(self, queue: str) -> bool:
        """Drop ``queue`` from the ``queues`` set if its list is empty."""
        keys = [self.keys.queue(queue), self.keys.queues]
        return bool(self.store.scripts.run("forget_queue", keys, [queue]))

    # -- writing (destination) --------------------------------------------------------------------
    def put_jobs(self, queue: str, payloads: Sequence[str]) -> None:
        """Push payloads (oldest first) onto ``queue``, behind the jobs already there."""
        if payloads:
            self.store.push({queue: list(payloads)})

    def put_entries(self, zset: ZSetName, entries: Sequence[tuple[str, float]]) -> None:
        """Add entries with their scores to ``zset`` (one ZADD: atomic)."""
        if entries:
            self.client.zadd(self.store.zset_key(zset), {raw: score for raw, score in entries})
