"""Concurrency-limit slots and deferred jobs (see lua/limit.lua), a batch per script call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from conveyor.redis.scripts import ScriptCall
from conveyor.redis.store import Store


@dataclass(frozen=True, slots=True)
class Acquire:
    job_class: str
    limit: int
    identity: str
    jid: str
    raw: str
    #: What the slot is named by after the identity: the jid unless given (a slot the
    #: process keeps for its next jobs of the class is named by a number).
    tag: str = ""

    @property
    def member(self) -> str:
        return f"{self.identity}|{self.tag or self.jid}"


#: What :meth:`LimitStore.acquire_many` says per job.
DEFERRED, TAKEN, TAKEN_SCARCE = 0, 1, 2


class LimitStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def acquire(
        self, job_class: str, limit: int, *, identity: str, jid: str, raw: str, now: float
    ) -> bool:
        """Take a slot, or move the job from the working list to the deferred list."""
        return self.acquire_many([Acquire(job_class, limit, identity, jid, raw)], now)[0] > 0

    def acquire_many(self, requests: Sequence[Acquire], now: float) -> list[int]:
        """:meth:`acquire` for a batch, in order, in one script call: per job
        :data:`DEFERRED`, :data:`TAKEN`, or :data:`TAKEN_SCARCE` (taken, and jobs wait for
        slots: it took the last free one, or the job was resumed and others still wait)."""
        if not requests:
            return []
        groups: dict[tuple[str, int, str], list[int]] = {}
        for i, q in enumerate(requests):
            groups.setdefault((q.job_class, q.limit, q.identity), []).append(i)
        k = self.store.keys
        keys: list[str] = []
        args: list[str | int | float] = ["acquire", now, k.liveness_prefix]
        order: list[int] = []
        for (job_class, limit, identity), members in groups.items():
            keys += (k.limit_running(job_class), k.limit_deferred(job_class), k.working(identity))
            args += (limit, len(members))
            args += [requests[i].jid for i in members]
            args += [requests[i].raw for i in members]
            args += [requests[i].member for i in members]
            order += members
        replies = self.store.scripts.run("limit", keys, args)
        out = [0] * len(requests)
        for i, reply in zip(order, replies, strict=True):
            out[i] = int(reply)
        return out

    def release(
        self, job_class: str, limit: int, now: float, reservation_ttl: float, member: str = ""
    ) -> int:
        """Free ``member``'s slot (if given) and resume deferred jobs into the free slots;
        returns how many were resumed."""
        return self.release_many([(job_class, limit, member)], now, reservation_ttl)

    def release_many(
        self, slots: Sequence[tuple[str, int, str]], now: float, reservation_ttl: float
    ) -> int:
        """Free ``(job_class, limit, member)`` slots (member ``''``: only resume), resuming
        deferred jobs, in one script call."""
        if not slots:
            return 0
        call = self.release_call(slots, now, reservation_ttl)
        return int(self.store.scripts.run(call.name, call.keys, call.args))

    def release_call(
        self, slots: Sequence[tuple[str, int, str]], now: float, reservation_ttl: float
    ) -> ScriptCall:
        """:meth:`release_many` as a call to make in another call's round trip (it is safe
        to run twice: freeing a freed slot does nothing, and resuming fills free slots only)."""
        groups: dict[tuple[str, int], list[str]] = {}
        for job_class, limit, member in slots:
            members = groups.setdefault((job_class, limit), [])
            if member:
                members.append(member)
        k = self.store.keys
        keys: list[str] = [k.queues]
        args: list[str | int | float] = [
            "release",
            now,
            k.liveness_prefix,
            now + reservation_ttl,
            k.queue(""),
        ]
        for (job_class, limit), members in groups.items():
            keys += (k.limit_running(job_class), k.limit_deferred(job_class))
            args += (limit, len(members), *members)
        return ScriptCall("limit", keys, list(args))

    def tend(
        self, slots: Sequence[tuple[str, int, str]], now: float, reservation_ttl: float
    ) -> tuple[int, dict[str, bool]]:
        """:meth:`release_many`, also saying per class whether jobs waited for its slots."""
        if not slots:
            return 0, {}
        call = self.release_call(slots, now, reservation_ttl)
        call.args[0] = "tend"
        reply = self.store.scripts.run(call.name, call.keys, call.args)
        waited: dict[str, bool] = {}
        groups = dict.fromkeys((job_class, limit) for job_class, limit, _ in slots)
        for (job_class, _), flag in zip(groups, reply[1:], strict=True):
            waited[job_class] = waited.get(job_class, False) or bool(int(flag))
        return int(reply[0]), waited

    def running(self, job_class: str) -> int:
        return int(self.store.client.zcard(self.store.keys.limit_running(job_class)))

    def deferred(self, job_class: str) -> int:
        return int(self.store.client.llen(self.store.keys.limit_deferred(job_class)))
