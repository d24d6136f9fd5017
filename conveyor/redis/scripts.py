"""Lua scripts, loaded from the ``lua/`` folder and run with EVALSHA (falling back to EVAL
when the server has not seen them, e.g. after a restart)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script as _RedisScript
from redis.exceptions import NoScriptError

log = logging.getLogger("conveyor.redis")


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A script call that rides in another call's round trip (e.g. a concurrency limit's
    slot release with a batch's acknowledgement, :meth:`conveyor.redis.Store.finish`). A
    rider must be safe to run twice, and its failure never holds back the call it rides
    with: it is logged.

    >>> ScriptCall("limit", ["k"], ["release", 0]).command("abc")[:3]
    ('EVALSHA', 'abc', 1)
    """

    name: str
    keys: list[str]
    args: list[Any]

    def command(self, sha: str) -> tuple[Any, ...]:
        return ("EVALSHA", sha, len(self.keys), *self.keys, *self.args)


def main_reply(calls: Sequence[ScriptCall], replies: Sequence[Any]) -> Any:
    """The reply of the last of ``calls`` (the one the others ride with), raised if it is an
    error; a rider's error is logged. ``replies`` are in order, after any call that met
    NOSCRIPT was run again alone.

    >>> main_reply([ScriptCall("a", [], []), ScriptCall("b", [], [])], [ValueError("x"), 7])
    7
    """
    for call, reply in zip(calls[:-1], replies[:-1], strict=True):
        if isinstance(reply, Exception):
            log.error("script %s riding with an acknowledgement failed (%s)", call.name, reply)
    if isinstance(replies[-1], Exception):
        raise replies[-1]
    return replies[-1]


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    path = resources.files("conveyor.redis").joinpath("lua", f"{name}.lua")
    if not path.is_file():
        raise KeyError(f"no Lua script {name!r} in conveyor/redis/lua/")
    return path.read_text()


class Scripts:
    """The scripts bound to one client; each is called as ``scripts.run(name, keys, args)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._scripts: dict[str, _RedisScript] = {}
        self._lock = threading.Lock()

    def sha(self, name: str) -> str:
        return self._script(name).sha

    def _script(self, name: str) -> _RedisScript:
        script = self._scripts.get(name)
        if script is None:
            with self._lock:
                script = self._scripts.get(name)
                if script is None:
                    script = self._scripts[name] = self._client.register_script(source(name))
        return script

    def run(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        client: redis.Redis | redis.client.Pipeline | None = None,
        options: dict[str, Any] | None = None,
    ) -> Any:
        """Run script ``name``; ``options`` go to redis-py's ``execute_command`` (e.g. reading
        the reply as bytes)."""
        script = self._script(name)
        if not options:
            try:
                return script(keys=keys, args=args, client=client)
            except NoScriptError:
                # redis-py loads the script once on NOSCRIPT; a failover between that load and
                # the retried EVALSHA lands on a server without it again: load it there too.
                return script(keys=keys, args=args, client=client)
        conn: Any = client if client is not None else self._client
        for attempt in range(3):
            try:
                return conn.execute_command(
                    "EVALSHA", script.sha, len(keys), *keys, *args, **options
                )
            except NoScriptError:
                # Not cached on this server (a restart, a failover): load it and run it again.
                if attempt == 2:
                    raise
                script.sha = self._client.script_load(script.script)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def run_and_wait(
        self, name: str, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]:
        """Run a script, then ``WAIT replicas timeout_ms``, in one round trip (a pipeline; a
        WAIT inside MULTI would not block). Returns the script's result and how many
        replicas confirmed the writes so far.

        Example: ``scripts.run_and_wait("push", keys, args, 1, 500)`` -> ``(1, 1)``.
        """
        script = self._script(name)
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.wait(replicas, timeout_ms)
            result, confirmed = pipe.execute(raise_on_error=False)
            if isinstance(result, NoScriptError) and attempt == 0:
                # A new primary (failover) or a restarted one has an empty script cache;
                # NOSCRIPT means the script did not run, so running it again is safe.
                self._client.script_load(script.script)
                continue
            for reply in (result, confirmed):
                if isinstance(reply, Exception):
                    raise reply
            return result, int(confirmed)
        raise AssertionError("unreachable: the second attempt returns or raises")
