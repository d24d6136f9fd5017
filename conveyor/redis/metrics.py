"""Cluster-wide job metrics in one Redis hash (``conveyor:metrics``), written in batches by
:mod:`conveyor.features.metrics` through ``lua/metrics_add.lua`` and read whole at scrape time."""

from __future__ import annotations

from collections.abc import Mapping

from conveyor.redis.store import Store


class MetricsStore:
    """Typed access to the metrics hash of one store (its client and key prefix).

    >>> MetricsStore(app.store).add({'["processed","Hard","default"]': 3}, {})  # doctest: +SKIP
    1
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.key = store.keys.metrics

    def add(self, counts: Mapping[str, int], sums: Mapping[str, float]) -> int:
        """Add integer ``counts`` and float ``sums`` to their fields atomically; returns how
        many fields changed."""
        args: list[str | int | float] = []
        for field, count in counts.items():
            if count:
                args += (field, "i", count)
        for field, amount in sums.items():
            if amount:
                args += (field, "f", repr(float(amount)))
        if not args:
            return 0
        return int(self.store.scripts.run("metrics_add", [self.key], args))

    def read(self) -> dict[str, str]:
        """Every field and its value as stored."""
        return {str(k): str(v) for k, v in self.client.hgetall(self.key).items()}

    def reset(self) -> bool:
        """Forget every metric (counters start again from zero); False if there were none."""
        return bool(self.client.delete(self.key))
