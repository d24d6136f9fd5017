"""Typed operations for the job lifecycle: enqueue, fetch, finish, requeue, recover, promote,
heartbeat. Each multi-key step is one Lua script; single commands go straight to Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import redis

from conveyor.redis.calls import Call, Command
from conveyor.redis.keys import Keys
from conveyor.redis.scripts import Scripts

#: Daily ``stat:*:<day>`` keys live as long as Sidekiq keeps them (5 years).
STATS_TTL = 5 * 365 * 24 * 3600

OutcomeKind = Literal["ok", "fail", "retry", "dead", "gone"]
ZSetName = Literal["schedule", "retry", "dead", "interrupted"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one executed job ended, for :meth:`Store.finish`."""

    kind: OutcomeKind
    raw: str
    score: float = 0.0
    payload: str = ""


@dataclass(frozen=True, slots=True)
class Recovery:
    """One job found in a dead process's working list and where it goes (``queue=None``:
    the interrupted set)."""

    raw: str
    queue: str | None
    payload: str


def push_commands(
    keys: Keys, by_queue: dict[str, list[str]], scheduled: Sequence[tuple[float, str]] = ()
) -> list[Command]:
    """The commands of one enqueue transaction (the sync :class:`Store` and the asyncio
    client run the same ones).

    >>> push_commands(Keys(), {"mail": ['{"class":"A"}']})[1]
    ('LPUSH', ('queue:mail', '{"class":"A"}'))
    """
    commands: list[Command] = []
    for queue, payloads in by_queue.items():
        if payloads:
            commands.append(("SADD", (keys.queues, queue)))
            commands.append(("LPUSH", (keys.queue(queue), *payloads)))
    if scheduled:
        flat: list[str | float] = []
        for at, payload in scheduled:
            flat += (at, payload)
        commands.append(("ZADD", (keys.schedule, *flat)))
    return commands


def durable_push_call(
    keys: Keys,
    by_queue: dict[str, list[str]],
    scheduled: Sequence[tuple[float, str]],
    replicas: int,
    timeout: float,
) -> Call:
    """One enqueue as ``push.lua`` followed by ``WAIT replicas timeout`` (``min_replicas``):
    the reply is ``(script result, replicas that confirmed)``.

    >>> durable_push_call(Keys(), {"mail": ["{}"]}, (), 1, 0.5).wait_ms
    500
    """
    queues = [(q, p) for q, p in by_queue.items() if p]
    args: list[str | int | float] = [len(queues)]
    for queue, payloads in queues:
        args += (queue, len(payloads), *payloads)
    for at, payload in scheduled:
        args += (at, payload)
    names = [keys.queues, keys.schedule, *(keys.queue(q) for q, _ in queues)]
    # WAIT 0 would block for ever: never less than a millisecond.
    return Call.wait(replicas, max(1, round(timeout * 1000)), "push", names, args)


class Store:
    """Redis operations of the engine, bound to one client and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.scripts = Scripts(client)

    # -- enqueue --------------------------------------------------------------------------------
    def push(
        self,
        by_queue: dict[str, list[str]],
        scheduled: Sequence[tuple[float, str]] = (),
        *,
        replicas: int = 0,
        timeout: float = 1.0,
    ) -> int | None:
        """Push payloads onto queues and/or the schedule set in one MULTI transaction.

        With ``replicas``, the push is ``push.lua`` followed by ``WAIT replicas timeout`` in
        the same round trip, and the result is how many replicas confirmed it (possibly fewer
        than asked; the caller decides). Without, the result is ``None``.
        Example: ``store.push({"default": [payload]}, replicas=1)`` -> ``1``.
        """
        if replicas:
            call = durable_push_call(self.keys, by_queue, scheduled, replicas, timeout)
            _, confirmed = self.scripts.run_and_wait(
                call.name, list(call.keys), list(call.args), replicas, call.wait_ms
            )
            return confirmed
        pipe = self.client.pipeline(transaction=True)
        for name, args in push_commands(self.keys, by_queue, scheduled):
            pipe.execute_command(name, *args)  # type: ignore[no-untyped-call]
        pipe.execute()
        return None

    # -- fetch ----------------------------------------------------------------------------------
    def fetch(self, identity: str, queues: Sequence[str], count: int) -> list[tuple[str, str]]:
        """Move up to ``count`` jobs from ``queues`` (in order) into the working list."""
        k = self.keys
        flat = self.scripts.run(
            "fetch", [k.working(identity), *(k.queue(q) for q in queues)], [count]
        )
        return [(queues[int(flat[i]) - 1], flat[i + 1]) for i in range(0, len(flat), 2)]

    def fetch_blocking(
        self, identity: str, queue: str, timeout: float, client: redis.Redis | None = None
    ) -> str | None:
        """Block up to ``timeout`` seconds for one job from ``queue`` (atomic BLMOVE)."""
        conn = client or self.client
        result = conn.blmove(
            self.keys.queue(queue),
            self.keys.working(identity),
            timeout,  # type: ignore[arg-type]  # Redis 6+ takes fractional seconds
            "RIGHT",
            "LEFT",
        )
        return None if result is None else str(result)

    # -- finish ---------------------------------------------------------------------------------
    def finish(
        self,
        identity: str,
        outcomes: Iterable[Outcome],
        day: str,
        dead_max: int,
        dead_cutoff: float,
    ) -> int:
        """Acknowledge executed jobs and file retries/dead jobs atomically; count stats."""
        k = self.keys
        args: list[str | int | float] = [STATS_TTL, dead_max, dead_cutoff]
        for o in outcomes:
            args += (o.kind, o.raw, o.score, o.payload)
        keys = [
            k.working(identity),
            k.retry,
            k.dead,
            k.stat("processed"),
            k.stat_daily("processed", day),
            k.stat("failed"),
            k.stat_daily("failed", day),
        ]
        return int(self.scripts.run("finish", keys, args))

    def requeue(self, identity: str, jobs: Sequence[tuple[str, str]]) -> int:
        """Put ``(queue, raw)`` jobs (oldest first) from the working list back on their queues,
        to run next in the same order."""
        if not jobs:
            return 0
        jobs = list(reversed(jobs))  # each RPUSH lands in front of the previous one
        k = self.keys
        names = sorted({q for q, _ in jobs})
        index = {q: i + 3 for i, q in enumerate(names)}
        args: list[str | int] = []
        for queue, raw in jobs:
            args += (raw, index[queue], queue)
        keys = [k.working(identity), k.queues, *(k.queue(q) for q in names)]
        return int(self.scripts.run("requeue", keys, args))

    # -- recovery -------------------------------------------------------------------------------
    def registered_identities(self) -> list[str]:
        return sorted(str(m) for m in self.client.smembers(self.keys.working_registry))

    def is_alive(self, identity: str) -> bool:
        return bool(self.client.exists(self.keys.liveness(identity)))

    def working_jobs(self, identity: str) -> list[str]:
        return [str(j) for j in self.client.lrange(self.keys.working(identity), 0, -1)]

    def recover(
        self,
        identity: str,
        jobs: Sequence[Recovery],
        now: float,
        interrupted_max: int,
        interrupted_cutoff: float,
    ) -> tuple[int, int] | None:
        """Move a dead process's jobs back; ``None`` if it turned out to be alive."""
        k = self.keys
        names = sorted({j.queue for j in jobs if j.queue is not None})
        index = {q: i + 6 for i, q in enumerate(names)}
        args: list[str | int | float] = [identity, now, interrupted_max, interrupted_cutoff]
        for j in jobs:
            dest = 0 if j.queue is None else index[j.queue]
            args += (j.raw, dest, j.payload, j.queue or "")
        keys = [
            k.liveness(identity),
            k.working(identity),
            k.working_registry,
            k.interrupted,
            k.queues,
            *(k.queue(q) for q in names),
        ]
        moved, parked = self.scripts.run("recover", keys, args)
        if int(moved) < 0:
            return None
        return int(moved), int(parked)

    def try_lock(self, name: str, token: str, ttl_ms: int) -> bool:
        """Take a short lock if nobody holds it (used so one process per interval sweeps)."""
        return bool(self.client.set(self.keys.lock(name), token, nx=True, px=ttl_ms))

    # -- scheduled and retry sets ---------------------------------------------------------------
    def zset_key(self, zset: ZSetName) -> str:
        return {
            "schedule": self.keys.schedule,
            "retry": self.keys.retry,
            "dead": self.keys.dead,
            "interrupted": self.keys.interrupted,
        }[zset]

    def due(self, zset: ZSetName, now: float, limit: int) -> list[str]:
        key = self.zset_key(zset)
        return [str(j) for j in self.client.zrangebyscore(key, "-inf", now, start=0, num=limit)]

    def promote(self, zset: ZSetName, jobs: Sequence[tuple[str, str, str]]) -> int:
        """Move ``(raw, queue, new payload)`` jobs from a sorted set to their queues, each
        pop and push together (the scheduled poller, and retry-all from the data API)."""
        if not jobs:
            return 0
        k = self.keys
        names = sorted({q for _, q, _ in jobs})
        index = {q: i + 3 for i, q in enumerate(names)}
        args: list[str | int] = []
        for raw, queue, payload in jobs:
            args += (raw, index[queue], payload, queue)
        keys = [self.zset_key(zset), k.queues, *(k.queue(q) for q in names)]
        return int(self.scripts.run("promote", keys, args))

    def add_capped(
        self,
        zset: Literal["dead", "interrupted"],
        score: float,
        payload: str,
        max_size: int,
        cutoff: float,
        *,
        source: tuple[Literal["list", "zset"], str, str] | None = None,
    ) -> bool:
        """Add to a capped set; ``source=(kind, key, raw)`` also removes the job from there."""
        key = self.keys.dead if zset == "dead" else self.keys.interrupted
        kind, src_key, raw = source if source else ("none", key, "")
        added = self.scripts.run(
            "capped_add", [key, src_key], [score, payload, max_size, cutoff, kind, raw]
        )
        return bool(added)

    # -- processes ------------------------------------------------------------------------------
    def heartbeat(
        self,
        identity: str,
        *,
        info: str,
        busy: int,
        beat: float,
        quiet: bool,
        rss_kb: int,
        rtt_us: int,
        work: dict[str, str],
        process_ttl: int,
        liveness_ttl_ms: int,
    ) -> tuple[bool, str | None]:
        """Publish one heartbeat; returns (hash existed before, pending signal or None)."""
        k = self.keys
        keys = [
            k.processes,
            k.process(identity),
            k.work(identity),
            k.workers(identity),
            k.signals(identity),
            k.liveness(identity),
            k.working_registry,
        ]
        args: list[str | int | float] = [
            identity,
            info,
            busy,
            beat,
            "true" if quiet else "false",
            rss_kb,
            rtt_us,
            process_ttl,
            liveness_ttl_ms,
        ]
        for tid, doc in work.items():
            args += (tid, doc)
        existed, signal = self.scripts.run("heartbeat", keys, args)
        return bool(existed), signal or None

    def unregister(self, identity: str) -> int:
        """Remove a process that shut down; returns jobs left in its working list."""
        k = self.keys
        keys = [
            k.processes,
            k.process(identity),
            k.work(identity),
            k.workers(identity),
            k.liveness(identity),
            k.working_registry,
            k.working(identity),
        ]
        return int(self.scripts.run("unregister", keys, [identity]))

    def process_count(self) -> int:
        return int(self.client.scard(self.keys.processes))

    def rtt_us(self) -> int:
        start = time.perf_counter()
        self.client.ping()
        return int((time.perf_counter() - start) * 1_000_000)

    def send_signal(self, identity: str, signal: Literal["TSTP", "TERM"]) -> None:
        """Ask a process (Conveyor or Sidekiq) to quiet (TSTP) or stop (TERM)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.lpush(self.keys.signals(identity), signal)
        pipe.expire(self.keys.signals(identity), 60)
        pipe.execute()
