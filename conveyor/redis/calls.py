"""Redis round trips described as data, so one piece of logic serves a sync and an async client.

Code that needs Redis in the middle of its work (enqueueing, deduplicating, reading a flag) is
written once as a *plan*: a generator that yields a :class:`Call` and receives its reply. A sync
caller drives it with :func:`run_sync` on a :class:`~conveyor.redis.store.Store`, an asyncio
caller with :func:`run_async` on an :class:`~conveyor.redis.aio.AsyncStore`; neither copy of the
logic exists twice (the "sans-I/O" style of h11 and hyper-h2).

>>> def holder(digest: str) -> Plan[str | None]:
...     found = yield Call.command("HGET", f"dedup:{digest}", "jid")
...     return None if found is None else str(found)
>>> plan = holder("ab12")
>>> next(plan)
Call(kind='command', name='HGET', keys=(), args=('dedup:ab12', 'jid'), commands=())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import redis
import redis.asyncio as aioredis

T = TypeVar("T")

#: A piece of logic that makes Redis calls: yields each :class:`Call`, gets its reply back.
Plan = Generator["Call", Any, T]

Command = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Call:
    """One round trip: a Lua script of ``conveyor/redis/lua`` (by name), one command, or a
    MULTI/EXEC transaction of commands (reply: the list of their replies)."""

    kind: Literal["script", "command", "transaction", "script_wait"]
    name: str = ""
    keys: tuple[str, ...] = ()
    args: tuple[Any, ...] = ()
    commands: tuple[Command, ...] = ()
    #: ``script_wait`` only: WAIT for this many replicas, at most ``wait_ms``.
    replicas: int = 0
    wait_ms: int = 0
    #: The store (Redis instance) it goes to, by name; ``None``: the runner's own store.
    store: str | None = None

    def to(self, store: str) -> Call:
        """This call sent to the store ``store``. Example: ``Call.command(...).to("b")``."""
        return dataclasses.replace(self, store=store)

    @classmethod
    def script(cls, name: str, keys: Sequence[str], args: Sequence[Any]) -> Call:
        """Run ``lua/<name>.lua``. Example: ``Call.script("dedup_claim", keys, args)``."""
        return cls("script", name, tuple(keys), tuple(args))

    @classmethod
    def wait(
        cls, replicas: int, wait_ms: int, name: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Call:
        """Run ``lua/<name>.lua`` then ``WAIT replicas wait_ms`` in one round trip (durable
        enqueue); reply: ``(script result, replicas that confirmed)``."""
        return cls("script_wait", name, tuple(keys), tuple(args), (), replicas, wait_ms)

    @classmethod
    def command(cls, name: str, *args: Any) -> Call:
        """One command. Example: ``Call.command("HGET", key, field)``."""
        return cls("command", name, (), args)

    @classmethod
    def transaction(cls, commands: Sequence[Command]) -> Call:
        """Commands in one MULTI/EXEC. Example: ``Call.transaction([("LPUSH", (k, v))])``."""
        return cls("transaction", commands=tuple(commands))


class _Scripts(Protocol):
    def run(self, name: str, keys: list[str], args: list[Any]) -> Any: ...

    def run_and_wait(
        self, name: str, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]: ...


class _AsyncScripts(Protocol):
    async def run(self, name: str, keys: list[str], args: list[Any]) -> Any: ...

    async def run_and_wait(
        self, name: str, keys: list[str], args: list[Any], replicas: int, timeout_ms: int
    ) -> tuple[Any, int]: ...


class SyncStore(Protocol):
    """What :func:`run_sync` needs: :class:`~conveyor.redis.store.Store` is one."""

    @property
    def client(self) -> redis.Redis: ...

    @property
    def scripts(self) -> _Scripts: ...


class AsyncStore(Protocol):
    """What :func:`run_async` needs: :class:`~conveyor.redis.aio.AsyncStore` is one."""

    @property
    def client(self) -> aioredis.Redis: ...

    @property
    def scripts(self) -> _AsyncScripts: ...


def run_sync(
    store: Callable[[], SyncStore],
    plan: Plan[T],
    named: Callable[[str], SyncStore] | None = None,
) -> T:
    """Drive ``plan`` to its end with a blocking client; returns its result. ``store`` is
    asked for only when the plan makes a call (a testing mode's enqueue never connects);
    ``named`` gives the store of a call addressed to one by name (:meth:`Call.to`)."""
    reply: Any = None
    try:
        while True:
            call = plan.send(reply)
            target = store() if call.store is None or named is None else named(call.store)
            reply = _execute_sync(target, call)
    except StopIteration as done:
        result: T = done.value
        return result


async def run_async(
    store: Callable[[], AsyncStore],
    plan: Plan[T],
    named: Callable[[str], AsyncStore] | None = None,
) -> T:
    """Drive ``plan`` to its end with an asyncio client; returns its result."""
    reply: Any = None
    try:
        while True:
            call = plan.send(reply)
            target = store() if call.store is None or named is None else named(call.store)
            reply = await _execute_async(target, call)
    except StopIteration as done:
        result: T = done.value
        return result


def on_store(store: str, plan: Plan[T]) -> Plan[T]:
    """``plan`` with each of its calls sent to the store ``store`` (unless a call names its
    own). Example: ``holders = yield from on_store("b", claim_plan(keys, claims))``."""
    reply: Any = None
    try:
        while True:
            call = plan.send(reply)
            reply = yield call if call.store is not None else call.to(store)
    except StopIteration as done:
        result: T = done.value
        return result


def no_calls(value: T) -> Plan[T]:
    """A plan that makes no call and returns ``value`` (for logic that needs no Redis)."""
    return value
    yield  # pragma: no cover - makes this a generator


def _execute_sync(store: SyncStore, call: Call) -> Any:
    if call.kind == "script":
        return store.scripts.run(call.name, list(call.keys), list(call.args))
    if call.kind == "script_wait":
        return store.scripts.run_and_wait(
            call.name, list(call.keys), list(call.args), call.replicas, call.wait_ms
        )
    if call.kind == "command":
        return store.client.execute_command(call.name, *call.args)  # type: ignore[no-untyped-call]
    pipe = store.client.pipeline(transaction=True)
    for name, args in call.commands:
        pipe.execute_command(name, *args)  # type: ignore[no-untyped-call]
    return pipe.execute()


async def _execute_async(store: AsyncStore, call: Call) -> Any:
    if call.kind == "script":
        return await store.scripts.run(call.name, list(call.keys), list(call.args))
    if call.kind == "script_wait":
        return await store.scripts.run_and_wait(
            call.name, list(call.keys), list(call.args), call.replicas, call.wait_ms
        )
    if call.kind == "command":
        client: Any = store.client  # redis.asyncio's execute_command is untyped
        return await client.execute_command(call.name, *call.args)
    async with store.client.pipeline(transaction=True) as pipe:
        for name, args in call.commands:
            pipe.execute_command(name, *args)
        return await pipe.execute()
