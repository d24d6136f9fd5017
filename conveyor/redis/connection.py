"""Connecting: the configured URL, or the embedded server when there is none."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from conveyor.redis.embedded import ensure_server
from conveyor.settings import Settings


def resolve_url(settings: Settings) -> str:
    """The URL to use: ``settings.redis_url``, or the embedded server's (started if needed)."""
    if settings.redis_url:
        return settings.redis_url
    return ensure_server(settings.state_dir)


def connect(settings: Settings, *, max_connections: int | None = None) -> redis.Redis:
    """A thread-safe client with a connection pool, decoding replies as UTF-8 strings."""
    url = resolve_url(settings)
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        **tcp,
    )


def connect_async(settings: Settings, *, max_connections: int | None = None) -> aioredis.Redis:
    """The asyncio twin of :func:`connect` (same URL, decoding and keepalive), for
    ``aperform_async`` and the async data API. Its connections belong to the event loop that
    first uses them.

    >>> client = connect_async(Settings(redis_url="redis://localhost:6379/0"))  # doctest: +SKIP
    """
    url = resolve_url(settings)
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        **tcp,
    )
