"""Cron entries: definitions in one hash, last claimed tick per entry (lua/cron_enqueue.lua)."""

from __future__ import annotations

from conveyor.redis.store import Store


class CronStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.client = store.client
        self.keys = store.keys

    def all(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.client.hgetall(self.keys.cron).items()}

    def get(self, name: str) -> str | None:
        value = self.client.hget(self.keys.cron, name)
        return None if value is None else str(value)

    def put(self, name: str, definition: str) -> None:
        self.client.hset(self.keys.cron, name, definition)

    def delete(self, name: str) -> bool:
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.cron, name)
        pipe.delete(self.keys.cron_tick(name))
        removed, _ = pipe.execute()
        return bool(removed)

    def last_tick(self, name: str) -> float | None:
        value = self.client.get(self.keys.cron_tick(name))
        return None if value is None else float(value)

    def enqueue_tick(self, name: str, tick: float, queue: str, payload: str) -> bool:
        keys = [self.keys.cron_tick(name), self.keys.queues, self.keys.queue(queue)]
        return bool(self.store.scripts.run("cron_enqueue", keys, [tick, payload, queue]))
