"""RQ: both workloads as plain functions; bulk enqueue with ``Queue.enqueue_many`` in a pipeline.
The worker is RQ's own CLI (``rq worker``, Worker or SimpleWorker class)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peer_common
from redis import Redis
from rq import Queue

noop = peer_common.noop
sleep = peer_common.sleep
latency = peer_common.latency
incr = peer_common.incr


def enqueue(kind: str, jobs: int) -> float:
    connection = Redis.from_url(peer_common.url())
    queue = Queue("bench", connection=connection)
    func = {"noop": noop, "sleep": sleep, "latency": latency, "incr": incr}[kind]
    connection.ping()
    if kind == "latency":  # one job at a time, as it happens
        return peer_common.timed(lambda args: [queue.enqueue(func, a) for a in args], kind, jobs)

    def push(args: Iterable[Any]) -> None:
        items = list(args)
        for start in range(0, len(items), peer_common.BATCH):
            batch = items[start : start + peer_common.BATCH]
            with connection.pipeline() as pipe:
                queue.enqueue_many([Queue.prepare_data(func, (a,)) for a in batch], pipeline=pipe)
                pipe.execute()

    return peer_common.timed(push, kind, jobs)
