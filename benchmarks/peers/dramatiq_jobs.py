"""Dramatiq: both workloads as actors on its Redis broker; no batch API, so a loop of ``send``.
The worker is Dramatiq's own CLI (``dramatiq dramatiq_jobs -p 1``)."""

from __future__ import annotations

import dramatiq
import peer_common
from dramatiq.brokers.redis import RedisBroker

dramatiq.set_broker(RedisBroker(url=peer_common.url()))

noop = dramatiq.actor(peer_common.noop, actor_name="noop")
sleep = dramatiq.actor(peer_common.sleep, actor_name="sleep")


def enqueue(kind: str, jobs: int) -> float:
    actor = sleep if kind == "sleep" else noop
    dramatiq.get_broker().client.ping()

    def push(args: list[int]) -> None:
        for a in args:
            actor.send(a)

    return peer_common.timed(push, kind, jobs)
