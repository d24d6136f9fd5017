"""The named Redis instances (stores) of one app: ``default`` (``Settings.redis_url``, or the
embedded server) and each of ``Settings.stores``, each a complete Sidekiq keyspace under the
same key prefix. Connected on first use, one client (and pool) per store.

>>> stores = Stores(Settings(redis_url="redis://a:6379/0", stores={"b": "redis://b:6379/0"}))
>>> stores.names
('default', 'b')
>>> stores.get("b").client.ping()                             # doctest: +SKIP
True
"""

from __future__ import annotations

import threading

import redis.asyncio as aioredis

from conveyor.errors import ConfigurationError
from conveyor.redis.aio import AsyncStore, LoopStores
from conveyor.redis.connection import connect, connect_async, resolve_url
from conveyor.redis.keys import Keys
from conveyor.redis.store import Store
from conveyor.redis_url import mask_url
from conveyor.routing import DEFAULT_STORE
from conveyor.settings import Settings

__all__ = ["DEFAULT_STORE", "Stores"]


class Stores:
    """Every store of one app's settings, by name; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._open: dict[str, Store] = {}
        self._async: dict[str, LoopStores] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        """``default`` first, then the configured stores by name."""
        return (DEFAULT_STORE, *sorted(self.settings.stores))

    def __contains__(self, name: object) -> bool:
        return name == DEFAULT_STORE or name in self.settings.stores

    def __len__(self) -> int:
        return 1 + len(self.settings.stores)

    def check(self, name: str) -> str:
        """``name`` if it is a configured store, else a :class:`ConfigurationError` that
        lists the known ones. Example: ``stores.check("b")`` -> ``'b'``."""
        if name not in self:
            raise ConfigurationError(
                f"no store named {name!r}; known stores: {', '.join(self.names)} (configure "
                "more with Settings(stores=...) or CONVEYOR_STORES)"
            )
        return name

    def get(self, name: str) -> Store:
        """The store called ``name``, connected on first use. Example: ``stores.get("b")``."""
        store = self._open.get(name)
        if store is not None:
            return store
        self.check(name)
        with self._lock:
            store = self._open.get(name)
            if store is None:
                client = connect(self.settings, url=self._url(name))
                store = self._open[name] = Store(client, Keys(self.settings.key_prefix))
        return store

    def get_async(self, name: str) -> AsyncStore:
        """The ``redis.asyncio`` twin of :meth:`get` for the running event loop (one client
        per loop and store, made on first use there; call it from a coroutine).
        Example: ``await stores.get_async("b").client.ping()``."""
        stores = self._async.get(name)
        if stores is None:
            self.check(name)
            with self._lock:
                stores = self._async.get(name)
                if stores is None:
                    stores = self._async[name] = LoopStores(lambda: self._new_async(name))
        return stores.current()

    def _new_async(self, name: str) -> AsyncStore:
        return AsyncStore(self.connect_async(name), Keys(self.settings.key_prefix))

    def connect_async(self, name: str) -> aioredis.Redis:
        """A new ``redis.asyncio`` client of the store called ``name``, with a pool of its own
        (the asyncio worker's fetch and finish lanes; :meth:`get_async` for shared use).
        Example: ``stores.connect_async(settings.store)``."""
        return connect_async(self.settings, url=self._url(self.check(name)))

    def _url(self, name: str) -> str | None:
        """The store's configured URL; ``None`` for the default (the settings decide)."""
        return None if name == DEFAULT_STORE else self.settings.stores[name]

    @property
    def default(self) -> Store:
        """The default store (``redis_url``): where configuration such as flags lives."""
        return self.get(DEFAULT_STORE)

    def display_url(self, name: str) -> str:
        """The store's URL fit to show (no credentials). Example: ``'redis://b:6379/0'``."""
        self.check(name)
        if name == DEFAULT_STORE:
            return mask_url(resolve_url(self.settings))
        return mask_url(self.settings.stores[name])

    def opened(self) -> dict[str, Store]:
        """The stores connected so far."""
        return dict(self._open)

    def close(self) -> None:
        """Close every connected store's connections."""
        with self._lock:
            opened, self._open = self._open, {}
        for store in opened.values():
            store.client.close()

    async def aclose(self) -> None:
        """Close the running loop's asyncio connections of every store."""
        for stores in list(self._async.values()):
            await stores.aclose()
