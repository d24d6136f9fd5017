"""RQ: both workloads as plain functions; bulk enqueue with ``Queue.enqueue_many`` in a pipeline.
The worker is RQ's own CLI (``rq worker``, Worker or SimpleWorker class)."""

from __future__ import annotations

import peer_common
from redis import Redis
from rq import Queue

noop = peer_common.noop
sleep = peer_common.sleep


def enqueue(kind: str, jobs: int) -> float:
    connection = Redis.from_url(peer_common.url())
    queue = Queue("bench", connection=connection)
    func = sleep if kind == "sleep" else noop
    connection.ping()

    def push(args: list[int]) -> None:
        for start in range(0, len(args), peer_common.BATCH):
            batch = args[start : start + peer_common.BATCH]
            with connection.pipeline() as pipe:
                queue.enqueue_many([Queue.prepare_data(func, (a,)) for a in batch], pipeline=pipe)
                pipe.execute()

    return peer_common.timed(push, kind, jobs)
