"""Connecting: the configured URL, or the embedded server when there is none."""

from __future__ import annotations

import redis

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
