"""Redis side of the deploy-maintenance tools (:mod:`conveyor.features.compat.maintenance`):
reading queues and sets in chunks, and the scripts that remove or move one exact entry at a time
(``remove_entries``, ``migrate_list``, ``migrate_zset``, ``forget_queue``, ``cron_retire``).

These are admin paths: they may SCAN (``SSCAN``/``ZSCAN``), never ``KEYS``.

>>> ms = MaintenanceStore(app.store)                                   # doctest: +SKIP
>>> ms.list_range(ListPlace("queue", "default"), 0, 499)               # doctest: +SKIP
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from conveyor.redis.store import Store, ZSetName

ListKind = Literal["queue", "working", "deferred"]


@dataclass(frozen=True, slots=True)
class ListPlace:
    """A list holding jobs: a queue (``name`` = queue name), a process's working list
    (``name`` = identity) or a concurrency-limited class's deferred list (``name`` = class)."""

    kind: ListKind
    name: str

    @property
    def label(self) -> str:
        """How reports name it: ``queue:default``, ``working:host:1:ab``, ``deferred:Import``."""
        return f"{self.kind}:{self.name}"


class MaintenanceStore:
    """Typed wrappers over one :class:`Store` (client, key prefix and scripts)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    # -- where jobs are -------------------------------------------------------------------------
    def list_key(self, place: ListPlace) -> str:
        k = self.keys
        if place.kind == "queue":
            return k.queue(place.name)
        if place.kind == "working":
            return k.working(place.name)
        return k.limit_deferred(place.name)

    def queue_names(self) -> list[str]:
        """Names in the ``queues`` set, sorted (SSCAN)."""
        return sorted(str(n) for n in self.client.sscan_iter(self.keys.queues, count=500))

    def dead_identities(self) -> list[str]:
        """Identities that may own a working list and whose liveness key has expired."""
        identities = self.store.registered_identities()
        if not identities:
            return []
        pipe = self.client.pipeline(transaction=False)
        for identity in identities:
            pipe.exists(self.keys.liveness(identity))
        alive = pipe.execute()
        return [i for i, live in zip(identities, alive, strict=True) if not live]

    def deferred_classes(self) -> list[str]:
        """Concurrency-limited class names that may have deferred jobs (SSCAN)."""
        return sorted(str(n) for n in self.client.sscan_iter(self.keys.limit_registry, count=500))

    # -- reading --------------------------------------------------------------------------------
    def list_length(self, place: ListPlace) -> int:
        return int(self.client.llen(self.list_key(place)))

    def list_range(self, place: ListPlace, start: int, stop: int) -> list[str]:
        """Entries ``start`` to ``stop`` inclusive (0 is the newest; -1 the next to run)."""
        return [str(j) for j in self.client.lrange(self.list_key(place), start, stop)]

    def zset_length(self, zset: ZSetName) -> int:
        return int(self.client.zcard(self.store.zset_key(zset)))

    def zset_scan(self, zset: ZSetName, count: int = 500) -> Iterator[str]:
        """Every entry of a sorted set (ZSCAN: each entry present throughout is seen at least
        once, even while others are added and removed)."""
        for raw, _ in self.client.zscan_iter(self.store.zset_key(zset), count=count):
            yield str(raw)

    # -- removing -------------------------------------------------------------------------------
    def remove_from_list(
        self, place: ListPlace, entries: Sequence[tuple[int, str]], *, from_tail: bool = False
    ) -> int:
        """Remove ``(index when read, exact payload)`` entries; ``-1`` if ``place`` is the
        working list of a process that is alive (then nothing is removed)."""
        if not entries:
            return 0
        keys = [self.list_key(place)]
        if place.kind == "working":
            keys.append(self.keys.liveness(place.name))
        args: list[str | int] = ["list", f"\x00conveyor-removed:{secrets.token_hex(8)}"]
        args.append(-1 if from_tail else 1)
        for index, raw in entries:
            args += (index, raw)
        return int(self.store.scripts.run("remove_entries", keys, args))

    def remove_from_zset(self, zset: ZSetName, raws: Sequence[str]) -> int:
        if not raws:
            return 0
        keys = [self.store.zset_key(zset)]
        return int(self.store.scripts.run("remove_entries", keys, ["zset", "", 0, *raws]))

    # -- moving ---------------------------------------------------------------------------------
    def move_between_queues(self, old: str, new: str, moves: Sequence[tuple[str, str]]) -> int:
        """Move ``(raw on old, payload for new)`` pairs, oldest first; returns how many moved."""
        if not moves:
            return 0
        k = self.keys
        args: list[str] = [new]
        for raw, payload in moves:
            args += (raw, payload)
        return int(
            self.store.scripts.run("migrate_list", [k.queue(old), k.queue(new), k.queues], args)
        )

    def rewrite_zset(self, zset: ZSetName, rewrites: Sequence[tuple[str, str]]) -> int:
        """Replace ``(raw, payload)`` entries in place, keeping their current scores."""
        if not rewrites:
            return 0
        args: list[str] = []
        for raw, payload in rewrites:
            args += (raw, payload)
        return int(self.store.scripts.run("migrate_zset", [self.store.zset_key(zset)], args))

    def forget_queue_if_empty(self, name: str) -> bool:
        """Drop ``name`` from the ``queues`` set if its list is empty."""
        keys = [self.keys.queue(name), self.keys.queues]
        return bool(self.store.scripts.run("forget_queue", keys, [name]))

    # -- cron -----------------------------------------------------------------------------------
    def cron_definitions(self) -> dict[str, str]:
        """Cron entry name -> JSON definition, as stored."""
        return {str(k): str(v) for k, v in self.client.hgetall(self.keys.cron).items()}

    def cron_destroy(self, name: str, expected: str) -> bool:
        """Delete the entry (and its last tick) if its definition is still ``expected``."""
        keys = [self.keys.cron, self.keys.cron_tick(name)]
        return bool(self.store.scripts.run("cron_retire", keys, [name, expected, "destroy", ""]))

    def cron_replace(self, name: str, expected: str, definition: str) -> bool:
        """Store ``definition`` if the entry's definition is still ``expected``."""
        keys = [self.keys.cron, self.keys.cron_tick(name)]
        args = [name, expected, "replace", definition]
        return bool(self.store.scripts.run("cron_retire", keys, args))
