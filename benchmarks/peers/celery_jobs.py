"""Celery: both workloads as tasks on its Redis broker (no result backend); no batch API for
independent tasks, so a loop of ``delay``. The worker is Celery's own CLI (prefork or threads)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import peer_common
from celery import Celery

app = Celery("celery_jobs", broker=peer_common.url())

noop = app.task(name="noop")(peer_common.noop)
sleep = app.task(name="sleep")(peer_common.sleep)
latency = app.task(name="latency")(peer_common.latency)
incr = app.task(name="incr")(peer_common.incr)


def enqueue(kind: str, jobs: int) -> float:
    task = {"noop": noop, "sleep": sleep, "latency": latency, "incr": incr}[kind]
    with app.connection_for_write() as connection:
        connection.ensure_connection()

    def push(args: Iterable[Any]) -> None:
        for a in args:
            task.delay(a)

    return peer_common.timed(push, kind, jobs)
