"""The scheduled-set poller (SPEC CORE-6): promote due jobs from ``schedule`` and ``retry``.

Each batch is read with ZRANGEBYSCORE and moved by one Lua script that pops and pushes each job
together. The poll interval scales with the number of processes, so the cluster as a whole
polls about every ``poll_interval_average`` seconds however many processes run.
"""

from __future__ import annotations

import logging
import random
from typing import Literal

from conveyor.core._protocols import AppLike
from conveyor.core.payload import dumps, parse, quarantine, queue_of
from conveyor.core.recovery import log_trimmed
from conveyor.errors import PayloadError
from conveyor.redis import Store

log = logging.getLogger("conveyor.scheduler")

SETS: tuple[Literal["schedule", "retry"], ...] = ("schedule", "retry")


def enqueue_due(app: AppLike, limit_batches: int = 1000, store: Store | None = None) -> int:
    """Promote every job due now; returns how many this call moved. An entry that is not a
    job (bad UTF-8, bad JSON, NaN...) goes to the dead set with the reason, raw data kept."""
    store = store or app.store
    settings = app.settings
    total = 0
    for zset in SETS:
        for _ in range(limit_batches):
            now = app.clock.time()
            due = store.due(zset, now, settings.poll_batch)
            if not due:
                break
            ready: list[tuple[str, str, str]] = []
            for raw in due:
                try:
                    job = parse(raw)
                except PayloadError as exc:
                    source_key = store.keys.schedule if zset == "schedule" else store.keys.retry
                    store.add_capped(
                        "dead",
                        now,
                        quarantine(raw, "default", str(exc), now),
                        settings.dead_max_jobs,
                        now - settings.dead_timeout,
                        source=("zset", source_key, raw),
                        on_trim=log_trimmed,
                    )
                    continue
                job.pop("at", None)
                job["enqueued_at"] = now
                ready.append((raw, queue_of(job), dumps(job)))
            moved = store.promote(zset, ready)
            total += moved
            if moved == 0 or len(due) < settings.poll_batch:
                break
    return total


def poll_interval(average: float, process_count: int, rng: random.Random | None = None) -> float:
    """Seconds until this process polls again: around ``average * process_count``, jittered
    by ±50% so processes do not poll in lockstep."""
    r = rng or random
    spread = average * max(1, process_count)
    return spread * r.random() + spread / 2
