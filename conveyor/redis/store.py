"""Typed operations for the job lifecycle: enqueue, fetch, finish, requeue, recover, promote,
heartbeat. Each multi-key step is one Lua script; single commands go straight to Redis."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
from redis.client import NEVER_DECODE

from conveyor.redis.calls import Call, Command
from conveyor.redis.keys import Keys
from conveyor.redis.scripts import ScriptCall, Scripts, main_reply

#: Read a reply as bytes: payloads are decoded by :func:`decode_raw`, never by redis-py, whose
#: strict decoding raises on one bad byte after a script already moved a whole batch.
RAW: dict[str, Any] = {NEVER_DECODE: []}


def raw_command(conn: Any, *args: Any) -> Any:
    """Run one command (on a client or a pipeline), its reply read as bytes."""
    return conn.execute_command(*args, **RAW)


def decode_raw(data: bytes | str) -> str:
    """Bytes read from Redis as text. Invalid UTF-8 is kept byte for byte as lone surrogates
    (``surrogateescape``), so :func:`encode_raw` gives the same bytes back for ``LREM``.

    >>> bad = b"ok-" + bytes([0xFF])
    >>> encode_raw(decode_raw(bad)) == bad
    True
    """
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def encode_raw(text: str) -> bytes:
    """The exact bytes of a payload read with :func:`decode_raw` (what Redis holds)."""
    return text.encode("utf-8", "surrogateescape")


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
class Trimmed:
    """Entries a capped set (``dead``, ``interrupted``) dropped to stay within its limits."""

    zset: str
    count: int
    #: The jids of the first (at most 100) dropped entries, for the log.
    jids: tuple[str, ...] = ()

    @classmethod
    def from_reply(cls, zset: str, reply: Sequence[object], offset: int) -> Trimmed | None:
        count = int(reply[offset])  # type: ignore[call-overload]
        if count <= 0:
            return None
        return cls(zset, count, tuple(decode_raw(j) for j in reply[offset + 1 :]))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Recovery:
    """One job found in a dead process's working list and where it goes (``queue=None``:
    the interrupted set; ``dead=True``: not a job, the dead set)."""

    raw: str
    queue: str | None
    payload: str
    dead: bool = False


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


def fetch_spec(
    keys: Keys, identity: str, queues: Sequence[str], count: int
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of ``fetch.lua`` (the sync and the asyncio store run the same call).

    >>> fetch_spec(Keys(), "w1", ["a"], 5)
    (['conveyor:working:w1', 'conveyor:working-registry', 'queue:a'], [5, 'w1'])
    """
    names = [keys.working(identity), keys.working_registry, *(keys.queue(q) for q in queues)]
    return names, [count, identity]


def fetched(queues: Sequence[str], flat: Sequence[Any]) -> list[tuple[str, str]]:
    """``fetch.lua``'s reply (read as bytes) as ``(queue, payload)`` pairs."""
    return [(queues[int(flat[i]) - 1], decode_raw(flat[i + 1])) for i in range(0, len(flat), 2)]


def finish_spec(
    keys: Keys,
    identity: str,
    outcomes: Iterable[Outcome],
    *,
    day: str,
    dead_max: int,
    dead_cutoff: float,
    boundary: str | None = None,
) -> tuple[list[str], list[str | bytes | int | float]]:
    """KEYS and ARGV of ``finish.lua``: acknowledge ``outcomes`` and publish the start
    ``boundary`` (``None``: leave it; ``""``: nothing unstarted)."""
    mark: str | bytes = "keep" if boundary is None else encode_raw(boundary)
    # Jobs that succeeded (nearly all) are sent as their payloads alone, the others as groups
    # of four: one argument per job to encode on the hot path instead of four.
    succeeded: list[str | bytes | int | float] = []
    others: list[str | bytes | int | float] = []
    for o in outcomes:
        if o.kind == "ok":
            succeeded.append(encode_raw(o.raw))
        else:
            others += (o.kind, encode_raw(o.raw), o.score, o.payload)
    args = [STATS_TTL, dead_max, dead_cutoff, mark, len(succeeded), *succeeded, *others]
    names = [
        keys.working(identity),
        keys.retry,
        keys.dead,
        keys.stat("processed"),
        keys.stat_daily("processed", day),
        keys.stat("failed"),
        keys.stat_daily("failed", day),
        keys.boundary(identity),
        keys.trimmed("dead"),
    ]
    return names, args


class Store:
    """Redis operations of the engine, bound to one client and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys | None = None) -> None:
        self.client = client
        self.keys = keys or Keys()
        self.scripts = Scripts(client)
        self._thread = threading.local()

    def thread_client(self) -> redis.Redis:
        """This thread's own client: one connection of the store's pool, kept for the thread's
        life (given back when the thread ends or the store closes). From many threads it costs
        far less CPU per call than :attr:`client`, which takes a connection from the pool and
        gives it back around every call, under the pool's lock (docs/jobs.md).

        >>> store.thread_client().incr("visits")      # doctest: +SKIP
        """
        own: redis.Redis | None = getattr(self._thread, "client", None)
        if own is None:
            own = redis.Redis(
                connection_pool=self.client.connection_pool, single_connection_client=True
            )
            self._thread.client = own
        return own

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
        """Move up to ``count`` jobs from ``queues`` (in order) into the working list, and
        register the process (so a sweep always finds the list)."""
        keys, args = fetch_spec(self.keys, identity, queues, count)
        return fetched(queues, self.scripts.run("fetch", keys, args, options=RAW))

    def fetch_blocking(
        self, identity: str, queue: str, timeout: float, client: redis.Redis | None = None
    ) -> str | None:
        """Block up to ``timeout`` seconds for one job from ``queue`` (atomic BLMOVE), and
        register the process as ``fetch.lua`` does. Both go in one pipeline: Redis runs the
        ``SADD`` the moment ``BLMOVE`` returns, even if this process dies before it reads the
        reply, so a sweep that took the process for dead meanwhile still finds the list."""
        conn = client or self.client
        k = self.keys
        pipe = conn.pipeline(transaction=False)
        raw_command(pipe, "BLMOVE", k.queue(queue), k.working(identity), "RIGHT", "LEFT", timeout)
        pipe.sadd(k.working_registry, identity)
        result = pipe.execute()[0]
        return None if result is None else decode_raw(result)

    # -- finish ---------------------------------------------------------------------------------
    def finish(
        self,
        identity: str,
        outcomes: Iterable[Outcome],
        day: str,
        dead_max: int,
        dead_cutoff: float,
        *,
        boundary: str | None = None,
        riders: Sequence[ScriptCall] = (),
    ) -> tuple[int, Trimmed | None]:
        """Acknowledge executed jobs and file retries/dead jobs atomically; count stats; publish
        the start ``boundary`` (``None``: leave it; ``""``: nothing unstarted). ``riders`` run
        just before, in the same round trip (see :class:`ScriptCall`). Returns how many jobs
        were still in the working list, and what the dead set dropped."""
        keys, args = finish_spec(
            self.keys,
            identity,
            outcomes,
            day=day,
            dead_max=dead_max,
            dead_cutoff=dead_cutoff,
            boundary=boundary,
        )
        if riders:
            reply = self._run_with_riders(riders, ScriptCall("finish", keys, args))
        else:
            reply = self.scripts.run("finish", keys, args)
        return int(reply[0]), Trimmed.from_reply("dead", reply, 1)

    def _run_with_riders(self, riders: Sequence[ScriptCall], main: ScriptCall) -> Any:
        """``riders`` then ``main`` in one pipeline (no transaction); a call that met NOSCRIPT
        did not run, so it is loaded and run again alone."""
        calls = [*riders, main]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self.scripts.sha(call.name), len(call.keys), *call.keys, *call.args)
        replies = pipe.execute(raise_on_error=False)
        for i, call in enumerate(calls):
            if isinstance(replies[i], redis.exceptions.NoScriptError):
                try:  # it did not run: load it, run it alone
                    replies[i] = self.scripts.run(call.name, call.keys, call.args)
                except redis.RedisError as exc:
                    replies[i] = exc
        return main_reply(calls, replies)

    def requeue(self, identity: str, jobs: Sequence[tuple[str, str]]) -> int:
        """Put ``(queue, raw)`` jobs (oldest first) from the working list back on their queues,
        to run next in the same order."""
        if not jobs:
            return 0
        jobs = list(reversed(jobs))  # each RPUSH lands in front of the previous one
        k = self.keys
        names = sorted({q for q, _ in jobs})
        index = {q: i + 3 for i, q in enumerate(names)}
        args: list[str | bytes | int] = []
        for queue, raw in jobs:
            args += (encode_raw(raw), index[queue], queue)
        keys = [k.working(identity), k.queues, *(k.queue(q) for q in names)]
        return int(self.scripts.run("requeue", keys, args))

    # -- recovery -------------------------------------------------------------------------------
    def registered_identities(self) -> list[str]:
        return sorted(str(m) for m in self.client.smembers(self.keys.working_registry))

    def is_alive(self, identity: str) -> bool:
        return bool(self.client.exists(self.keys.liveness(identity)))

    def working_jobs(self, identity: str) -> list[str]:
        """A process's working list, newest first (payloads decoded by :func:`decode_raw`)."""
        jobs = raw_command(self.client, "LRANGE", self.keys.working(identity), 0, -1)
        return [decode_raw(j) for j in jobs]

    def working_state(self, identity: str) -> tuple[list[str], str | None]:
        """A process's working list (newest first) and its start boundary, in one round trip
        (not a MULTI: redis-py decodes a transaction's replies strictly; the list of a dead
        process does not change meanwhile, and recover.lua re-checks that it is dead)."""
        k = self.keys
        pipe = self.client.pipeline(transaction=False)
        raw_command(pipe, "LRANGE", k.working(identity), 0, -1)
        raw_command(pipe, "GET", k.boundary(identity))
        jobs, boundary = pipe.execute()
        return [decode_raw(j) for j in jobs], None if boundary is None else decode_raw(boundary)

    def recover(
        self,
        identity: str,
        jobs: Sequence[Recovery],
        now: float,
        interrupted_max: int,
        interrupted_cutoff: float,
    ) -> tuple[int, int, Trimmed | None] | None:
        """Move a dead process's jobs back; ``None`` if it turned out to be alive. Returns
        (requeued, parked, what the interrupted set dropped)."""
        k = self.keys
        names = sorted({j.queue for j in jobs if j.queue is not None})
        index = {q: i + 9 for i, q in enumerate(names)}
        args: list[str | bytes | int | float] = [identity, now, interrupted_max, interrupted_cutoff]
        for j in jobs:
            dest = -1 if j.dead else 0 if j.queue is None else index[j.queue]
            args += (encode_raw(j.raw), dest, j.payload, j.queue or "")
        keys = [
            k.liveness(identity),
            k.working(identity),
            k.working_registry,
            k.interrupted,
            k.queues,
            k.boundary(identity),
            k.trimmed("interrupted"),
            k.dead,
            *(k.queue(q) for q in names),
        ]
        reply = self.scripts.run("recover", keys, args)
        if int(reply[0]) < 0:
            return None
        return int(reply[0]), int(reply[1]), Trimmed.from_reply("interrupted", reply, 2)

    def server_uptime(self) -> float:
        """Seconds since the Redis server started (a restart empties every liveness key
        that expired while it was down)."""
        info = self.client.info("server")
        return float(info.get("uptime_in_seconds", 0))

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
        due = raw_command(self.client, "ZRANGEBYSCORE", key, "-inf", now, "LIMIT", 0, limit)
        return [decode_raw(j) for j in due]

    def promote(self, zset: ZSetName, jobs: Sequence[tuple[str, str, str]]) -> int:
        """Move ``(raw, queue, new payload)`` jobs from a sorted set to their queues, each
        pop and push together (the scheduled poller, and retry-all from the data API)."""
        if not jobs:
            return 0
        k = self.keys
        names = sorted({q for _, q, _ in jobs})
        index = {q: i + 3 for i, q in enumerate(names)}
        args: list[str | bytes | int] = []
        for raw, queue, payload in jobs:
            args += (encode_raw(raw), index[queue], payload, queue)
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
        on_trim: Callable[[Trimmed], None] | None = None,
    ) -> bool:
        """Add to a capped set; ``source=(kind, key, raw)`` also removes the job from there.
        ``on_trim`` hears of entries the set dropped to stay within its limits."""
        key = self.keys.dead if zset == "dead" else self.keys.interrupted
        kind, src_key, raw = source if source else ("none", key, "")
        reply = self.scripts.run(
            "capped_add",
            [key, src_key, self.keys.trimmed(zset)],
            [score, payload, max_size, cutoff, kind, encode_raw(raw)],
        )
        trimmed = Trimmed.from_reply(zset, reply, 1)
        if trimmed is not None and on_trim is not None:
            on_trim(trimmed)
        return bool(int(reply[0]))

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
        health: str = "{}",
    ) -> tuple[bool, str | None, bool]:
        """Publish one heartbeat; returns (hash existed before, pending signal or None,
        liveness key existed before)."""
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
            health,
        ]
        for tid, doc in work.items():
            args += (tid, doc)
        existed, signal, alive = self.scripts.run("heartbeat", keys, args)
        return bool(existed), signal or None, bool(alive)

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
            k.boundary(identity),
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
