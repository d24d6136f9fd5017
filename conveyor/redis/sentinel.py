"""Clients for a Sentinel-managed primary (``redis+sentinel://`` URLs, docs/scaling.md).

redis-py's :class:`~redis.sentinel.Sentinel` does the discovery: every new connection asks
the Sentinels for the current primary, and a connection that finds itself on a demoted primary
(``READONLY``) drops so the next one asks again. Two things are added here:

* a reconnect policy long enough to span a failover (``Settings.reconnect_timeout``): a
  connection to a dead primary keeps asking the Sentinels and reconnecting with backoff until
  one has been promoted, so workers, the client and the dashboard carry on by themselves. A
  command whose connection breaks is retried (twice) on a new connection, which waits for the
  new primary that way. redis-py uses one policy for both, so the wait would multiply: the
  connection here takes its own;
* a Lua script that writes on a demoted primary fails with an ``ERR ... READONLY`` script
  error rather than redis-py's ``ReadOnlyError``; it is treated like the plain error, as a
  lost connection, so the script is retried on the new primary.

A retried write whose reply was lost can apply twice (an enqueue pushes the job twice): the
delivery promise is at-least-once, as everywhere in Conveyor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import MasterNotFoundError as AsyncMasterNotFoundError
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import SSLConnection
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
)

from conveyor.errors import ConfigurationError
from conveyor.redis_url import SentinelTarget

#: Seconds one Sentinel may take to answer before the next one is asked.
SENTINEL_TIMEOUT = 1.0
#: Backoff between retries: exponential with full jitter from 50 ms, capped at 0.5 s.
BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.5
#: Sleeps of about this much in total happen before the backoff reaches its cap.
_RAMP = 2.5
#: Retries of a command whose connection broke; each one reconnects under failover_retry.
COMMAND_RETRIES = 2

# What a write inside a Lua script says on a replica (Redis 6.2 and 7).
_SCRIPT_READONLY = "READONLY You can't write against a read only replica"


def failover_retry(window: float) -> Retry:
    """A retry policy whose backoff sleeps add up to about ``window`` seconds.

    >>> failover_retry(20.0).get_retries()
    40
    """
    retries = max(3, math.ceil((max(0.0, window - _RAMP)) / BACKOFF_CAP) + 5)
    return Retry(_backoff(), retries)


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE)


def _auth_error(sentinel_kwargs: Mapping[str, Any], hosts: str) -> ConfigurationError:
    if sentinel_kwargs.get("password"):
        return ConfigurationError(
            f"the Sentinels at {hosts} refused the user and password given them (WRONGPASS); "
            "check sentinel_username and sentinel_password (CONVEYOR_SENTINEL_USERNAME, "
            "CONVEYOR_SENTINEL_PASSWORD)"
        )
    return ConfigurationError(
        f"the Sentinels at {hosts} ask for a password (NOAUTH); set sentinel_password, and "
        "sentinel_username for an ACL user, in the environment (CONVEYOR_SENTINEL_PASSWORD) or "
        "the config file (the URL's password is the primary's)"
    )


def _hosts(sentinels: list[Any]) -> str:
    kwargs = [s.connection_pool.connection_kwargs for s in sentinels]
    return ",".join(f"{k.get('host')}:{k.get('port')}" for k in kwargs)


class _Sentinel(Sentinel):
    """redis-py's discovery counts a Sentinel that refuses to answer without a password as
    unreachable, so a missing or wrong ``sentinel_password`` would read as "no master found"
    after the whole reconnect window. When no Sentinel named the primary, this asks one for a
    ``PING``, and a refused login becomes a :class:`ConfigurationError` naming the setting,
    at once (it is not retried)."""

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)
        except MasterNotFoundError:
            for node in self.sentinels:
                try:
                    node.ping()
                except redis.AuthenticationError:
                    raise _auth_error(self.sentinel_kwargs, _hosts(self.sentinels)) from None
                except redis.RedisError:
                    continue
            raise


class _AsyncSentinel(AsyncSentinel):
    """The asyncio twin of :class:`_Sentinel`."""

    async def discover_master(self, service_name: str) -> Any:
        try:
            return await super().discover_master(service_name)
        except AsyncMasterNotFoundError:
            for node in self.sentinels:
                try:
                    await node.ping()
                except redis.AuthenticationError:
                    raise _auth_error(self.sentinel_kwargs, _hosts(self.sentinels)) from None
                except redis.RedisError:
                    continue
            raise


class _Connection(SentinelManagedConnection):
    def connect(self) -> None:
        policy: Retry = getattr(self.connection_pool, "connect_retry", None) or self.retry
        policy.call_with_retry(self._connect_retry, lambda error: None)

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        # redis-py reconnects a connection dropped inside a command's retry straight to the
        # address it had, which after a failover is the dead or demoted primary: ask the
        # Sentinels again instead.
        if not self._sock:
            self.connect()
        super().send_packed_command(*args, **kwargs)  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.ResponseError as exc:
            if self.connection_pool.is_master and _SCRIPT_READONLY in str(exc):
                # Same meaning as the ReadOnlyError redis-py handles: this primary was
                # demoted. Dropping the connection makes the next one ask the Sentinels.
                self.disconnect()  # type: ignore[no-untyped-call]
                raise redis.ConnectionError(
                    "the primary was demoted to a replica (a Lua script could not write)"
                ) from exc
            raise


class _SSLConnection(_Connection, SSLConnection):
    pass


class _Pool(SentinelConnectionPool):
    """The primary's pool; closing it also closes the connections to the Sentinels."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any) -> None:
        kwargs["connection_class"] = _SSLConnection if kwargs.pop("ssl", False) else _Connection
        window = kwargs.pop("reconnect_timeout")
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        # The connections reach the pool through this proxy (a weak reference back).
        self.proxy.connect_retry = failover_retry(window)  # type: ignore[attr-defined]

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.sentinel_manager.close()


def primary_client(
    target: SentinelTarget,
    *,
    max_connections: int | None = None,
    reconnect_timeout: float = 20.0,
    auth: Mapping[str, str] | None = None,
) -> redis.Redis:
    """A thread-safe client for the primary ``target`` names, following failovers.

    >>> from conveyor.redis_url import parse_sentinel_url
    >>> client = primary_client(parse_sentinel_url("redis+sentinel://s1,s2,s3/jobs"))
    """
    sentinels = _Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "ssl": target.tls,
            **(auth or {}),
        },
    )
    client: redis.Redis = sentinels.master_for(
        target.service,
        connection_pool_class=_Pool,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        socket_keepalive=True,
        retry=Retry(_backoff(), COMMAND_RETRIES),
        reconnect_timeout=reconnect_timeout,
    )
    return client


class _AsyncPool(AsyncSentinelPool):
    """The asyncio primary's pool; closing it also closes the connections to the Sentinels."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        try:
            await super().disconnect(inuse_connections)
        finally:
            for node in self.sentinel_manager.sentinels:
                await node.aclose()


def primary_client_async(
    target: SentinelTarget,
    *,
    max_connections: int | None = None,
    auth: Mapping[str, str] | None = None,
) -> aioredis.Redis:
    """An asyncio client for the primary ``target`` names (``aperform_async``, the async data
    API). Each new connection asks the Sentinels for the current primary; a command whose
    connection breaks is retried with backoff for about 20 s, long enough for a failover.

    >>> from conveyor.redis_url import parse_sentinel_url
    >>> client = primary_client_async(parse_sentinel_url("redis+sentinel://s1,s2,s3/jobs"))
    """
    sentinels = _AsyncSentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT,
            "socket_connect_timeout": SENTINEL_TIMEOUT,
            "ssl": target.tls,
            **(auth or {}),
        },
    )
    client: aioredis.Redis = sentinels.master_for(
        target.service,
        connection_pool_class=_AsyncPool,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        decode_responses=True,
        max_connections=max_connections,
        health_check_interval=30,
        socket_keepalive=True,
        retry=AsyncRetry(_backoff(), failover_retry(20.0).get_retries()),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    return client
