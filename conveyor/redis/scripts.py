"""Lua scripts, loaded from the ``lua/`` folder and run with EVALSHA (falling back to EVAL
when the server has not seen them, e.g. after a restart)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script as _RedisScript

SCRIPT_NAMES = (
    "capped_add",
    "fetch",
    "finish",
    "heartbeat",
    "promote",
    "recover",
    "requeue",
    "unregister",
    "zset_to_queue",
)


@cache
def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    return resources.files("conveyor.redis").joinpath("lua", f"{name}.lua").read_text()


class Scripts:
    """The scripts bound to one client; each is called as ``scripts.run(name, keys, args)``."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts: dict[str, _RedisScript] = {
            name: client.register_script(source(name)) for name in SCRIPT_NAMES
        }

    def run(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        client: redis.Redis | redis.client.Pipeline | None = None,
    ) -> Any:
        return self._scripts[name](keys=keys, args=args, client=client)
