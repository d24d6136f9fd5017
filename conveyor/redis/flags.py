"""Feature-flag state in one Redis hash (``conveyor:flags``: name -> JSON)."""

from __future__ import annotations

from conveyor.redis.store import Store


class FlagStore:
    def __init__(self, store: Store) -> None:
        self.client = store.client
        self.key = store.keys.flags

    def get(self, name: str) -> str | None:
        value = self.client.hget(self.key, name)
        return None if value is None else str(value)

    def all(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.client.hgetall(self.key).items()}

    def put(self, name: str, state: str) -> None:
        self.client.hset(self.key, name, state)

    def delete(self, name: str) -> bool:
        return bool(self.client.hdel(self.key, name))
