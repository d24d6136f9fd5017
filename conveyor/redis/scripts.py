"""Lua scripts, loaded from the ``lua/`` folder and run with EVALSHA (falling back to EVAL
when the server has not seen them, e.g. after a restart)."""

from __future__ import annotations

import threading
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script as _RedisScript


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
        if not options:
            return self._script(name)(keys=keys, args=args, client=client)
        script = self._script(name)
        conn: Any = client if client is not None else self._client
        try:
            return conn.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **options)
        except redis.exceptions.NoScriptError:
            # Not cached on this server (a restart, a failover): load it and run it again.
            script.sha = self._client.script_load(script.script)
            return conn.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **options)
