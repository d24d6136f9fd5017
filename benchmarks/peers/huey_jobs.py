"""Huey: both workloads as tasks on ``RedisHuey``; no batch API (``Task.map`` is a loop), so a
loop of calls. The worker is Huey's own CLI (``huey_consumer huey_jobs.huey -k thread -w 10``)."""

from __future__ import annotations

import peer_common
from huey import RedisHuey

huey = RedisHuey("bench", url=peer_common.url())

noop = huey.task(name="noop")(peer_common.noop)
sleep = huey.task(name="sleep")(peer_common.sleep)


def enqueue(kind: str, jobs: int) -> float:
    task = sleep if kind == "sleep" else noop
    huey.storage.conn.ping()

    def push(args: list[int]) -> None:
        for a in args:
            task(a)

    return peer_common.timed(push, kind, jobs)
