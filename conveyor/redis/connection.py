"""Connecting: the configured URL (plain or Sentinel), or the embedded server when there is
none. Every Redis client Conveyor uses is made here."""

from __future__ import annotations

import redis
import redis.asyncio as aioredis

from conveyor.redis import sentinel
from conveyor.redis.embedded import ensure_server
from conveyor.redis_url import is_sentinel_url, mask_url, parse_sentinel_url
from conveyor.settings import Settings


def resolve_url(settings: Settings) -> str:
    """The URL to use: ``settings.redis_url``, or the embedded server's (started if needed).

    Example: ``resolve_url(Settings(redis_url="redis://cache:6379/0"))`` ->
    ``'redis://cache:6379/0'``.
    """
    if settings.redis_url:
        return settings.redis_url
    return ensure_server(settings.state_dir, fsync=settings.embedded_fsync)


def display_url(settings: Settings) -> str:
    """The URL in use, fit to show or log (no password, no query options).

    Example: ``display_url(Settings(redis_url="redis://:pw@cache/0"))`` -> ``'redis://cache/0'``.
    """
    return mask_url(resolve_url(settings))


def sentinel_auth(settings: Settings) -> dict[str, str]:
    """What the Sentinels are asked with: ``settings.sentinel_username`` and
    ``sentinel_password``, those that are set."""
    auth = {"username": settings.sentinel_username, "password": settings.sentinel_password}
    return {key: value for key, value in auth.items() if value}


def connect(
    settings: Settings, *, max_connections: int | None = None, url: str | None = None
) -> redis.Redis:
    """A thread-safe client with a connection pool, decoding replies as UTF-8 strings.

    A Sentinel URL gives a client of the current primary that follows failovers
    (:mod:`conveyor.redis.sentinel`). ``url`` (another store's) replaces the settings' URL.
    Example: ``connect(Settings()).ping()`` -> ``True``.
    """
    embedded = url is None and settings.redis_url is None
    url = url or resolve_url(settings)
    if is_sentinel_url(url):
        return sentinel.primary_client(
            parse_sentinel_url(url),
            max_connections=max_connections,
            reconnect_timeout=settings.reconnect_timeout,
            auth=sentinel_auth(settings),
        )
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        **tcp,
    )
    if embedded and settings.embedded_fsync == "always":
        # The server may have been started by a process without the option: raise it (never
        # lower it, another process may rely on it). It lasts until the server restarts.
        client.config_set("appendfsync", "always")
    return client


def connect_async(
    settings: Settings, *, max_connections: int | None = None, url: str | None = None
) -> aioredis.Redis:
    """The asyncio twin of :func:`connect` (same URL, decoding and keepalive), for
    ``aperform_async`` and the async data API. Its connections belong to the event loop that
    first uses them. ``url`` (another store's) replaces the settings' URL.

    >>> client = connect_async(Settings(redis_url="redis://localhost:6379/0"))  # doctest: +SKIP
    """
    url = url or resolve_url(settings)
    if is_sentinel_url(url):
        return sentinel.primary_client_async(
            parse_sentinel_url(url), max_connections=max_connections, auth=sentinel_auth(settings)
        )
    tcp = {} if url.startswith("unix://") else {"socket_keepalive": True}
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        **tcp,
    )
