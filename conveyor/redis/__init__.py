"""All Redis access: connection, key names, Lua scripts and their typed wrappers."""

from conveyor.redis.connection import connect, resolve_url
from conveyor.redis.keys import Keys
from conveyor.redis.store import Outcome, Recovery, Store

__all__ = ["Keys", "Outcome", "Recovery", "Store", "connect", "resolve_url"]
