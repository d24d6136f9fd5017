"""Huey: both workloads as tasks on ``RedisHuey``; no batch API (``Task.map`` is a loop), so a
loop of calls. The worker is Huey's own CLI (``huey_consumer huey_jobs.huey -k thread -w 10``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peer_common
from huey import RedisHuey

huey = RedisHuey("bench", url=peer_common.url())

noop = huey.task(name="noop")(peer_common.noop)
sleep = huey.task(name="sleep")(peer_common.sleep)
latency = huey.task(name="latency")(peer_common.latency)
incr = huey.task(name="incr")(peer_common.incr)


def enqueue(kind: str, jobs: int) -> float:
    task = {"noop": noop, "sleep": sleep, "latency": latency, "incr": incr}[kind]
    huey.storage.conn.ping()

    def push(args: Iterable[Any]) -> None:
        for a in args:
            task(a)

    return peer_common.timed(push, kind, jobs)
