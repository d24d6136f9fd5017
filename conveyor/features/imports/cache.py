"""The import cache (SPEC IMP-4): values with a 24-hour default TTL, so repeated database
queries and API calls are avoided, and a fallback that refetches on a miss.

Expiry is judged with the injected clock (the entry carries its expiry time), so a test can
move time on; Redis also expires the key a little later so nothing lingers.

>>> cache = ImportCache(app, namespace=import_id)                       # doctest: +SKIP
>>> cache.fetch("label:bug", lambda: find_label_id("bug"))              # doctest: +SKIP
'17'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from conveyor.core._protocols import AppLike
from conveyor.redis.import_store import ImportStore

#: The default time to live of a cached value.
DEFAULT_TTL = 24 * 3600.0
#: Redis drops a key this long after the clock says it expired.
_REDIS_GRACE = 3600


def key_of(*parts: str | int) -> str:
    """A cache key for values that must not appear in Redis key names (usernames, e-mails).

    >>> key_of("user", "alice")
    'user:2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90'
    """
    head, *rest = (str(p) for p in parts)
    digest = hashlib.sha256("\x00".join(rest).encode()).hexdigest()
    return f"{head}:{digest}"


class ImportCache:
    """String values under a namespace (one import, or one importer type)."""

    def __init__(self, app: AppLike, namespace: str, ttl: float = DEFAULT_TTL) -> None:
        self.app = app
        self.namespace = namespace
        self.ttl = ttl
        #: Misses that were refetched, for tests and status lines.
        self.refetches = 0

    @property
    def _store(self) -> ImportStore:
        return ImportStore(self.app.store)

    def get(self, key: str) -> str | None:
        """The cached value, or ``None`` when absent or expired."""
        entry = self._store.cache_get(self.namespace, key)
        if entry is None:
            return None
        expires = entry.get("expires_at")
        if not isinstance(expires, int | float) or expires <= self.app.clock.time():
            self._store.cache_delete(self.namespace, key)
            return None
        value = entry.get("value")
        return value if isinstance(value, str) else None

    def set(self, key: str, value: str, ttl: float | None = None) -> None:
        """Cache ``value`` for ``ttl`` seconds (default: the cache's TTL, 24 h)."""
        seconds = self.ttl if ttl is None else ttl
        entry = {"value": value, "expires_at": self.app.clock.time() + seconds}
        self._store.cache_set(self.namespace, key, entry, redis_ttl=int(seconds) + _REDIS_GRACE)

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._store.cache_delete(self.namespace, key)

    def fetch(
        self, key: str, refetch: Callable[[], str | None], ttl: float | None = None
    ) -> str | None:
        """The cached value; on a miss, ``refetch()`` (from the database or the source) and
        cache what it returns. ``None`` from ``refetch`` is not cached: a missing value is
        looked up again next time."""
        value = self.get(key)
        if value is not None:
            return value
        self.refetches += 1
        value = refetch()
        if value is not None:
            self.set(key, value, ttl)
        return value
