"""Dramatiq: both workloads as actors on its Redis broker; no batch API, so a loop of ``send``.
The worker is Dramatiq's own CLI (``dramatiq dramatiq_jobs -p 1``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import dramatiq
import peer_common
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

broker = RedisBroker(url=peer_common.url())
if os.environ.get("BENCH_ASYNC"):  # async actors need Dramatiq's event-loop middleware
    broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)

noop = dramatiq.actor(peer_common.noop, actor_name="noop")
sleep = dramatiq.actor(peer_common.sleep, actor_name="sleep")
latency = dramatiq.actor(peer_common.latency, actor_name="latency")
incr = dramatiq.actor(peer_common.incr, actor_name="incr")
aincr = dramatiq.actor(peer_common.aincr, actor_name="aincr")


def enqueue(kind: str, jobs: int) -> float:
    actor = {"noop": noop, "sleep": sleep, "latency": latency, "incr": incr, "aincr": aincr}[kind]
    dramatiq.get_broker().client.ping()

    def push(args: Iterable[Any]) -> None:
        for a in args:
            actor.send(a)

    return peer_common.timed(push, kind, jobs)
