"""All Redis access: connection, key names, Lua scripts and their typed wrappers."""

from conveyor.redis.connection import connect, resolve_url
from conveyor.redis.keys import Keys
from conveyor.redis.store import Outcome, Recovery, Store, Trimmed, decode_raw, encode_raw

__all__ = [
    "Keys",
    "Outcome",
    "Recovery",
    "Store",
    "Trimmed",
    "connect",
    "decode_raw",
    "encode_raw",
    "resolve_url",
]
