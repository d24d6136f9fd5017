"""Housekeeping of a worker process (SPEC CORE-3, CORE-6, CORE-7): the heartbeat, the orphan
recovery sweep, the scheduled-set poller and the features' periodic tasks. The sweep and the
poller are the functions of :mod:`conveyor.core.recovery` and :mod:`conveyor.core.scheduler`."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable

import psutil
import redis

from conveyor.core import recovery, scheduler
from conveyor.core.processor import ProcessorHost

log = logging.getLogger("conveyor.worker")

#: Running jobs by thread id: (queue, payload as fetched, epoch seconds it started).
BusyMap = dict[str, tuple[str, str, int]]


class Heartbeat:
    """Publishes this process in Redis (Sidekiq's process hash and work hashes) and refreshes
    the liveness key that orphan recovery checks.

    >>> beat = Heartbeat(app, "host:1:abc", started_at=clock.time())  # doctest: +SKIP
    >>> beat.beat({}, quiet=False)                                   # doctest: +SKIP
    None
    """

    def __init__(self, app: ProcessorHost, identity: str, *, started_at: float) -> None:
        self.app = app
        self.identity = identity
        self._rss_proc = psutil.Process()
        settings = app.settings
        self.info = json.dumps(
            {
                "hostname": socket.gethostname(),
                "started_at": started_at,
                "pid": os.getpid(),
                "tag": settings.tag,
                "concurrency": settings.concurrency,
                "queues": list(settings.queue_names),
                "labels": list(settings.labels),
                "identity": identity,
                "version": "conveyor",
            }
        )

    def beat(self, busy: BusyMap, *, quiet: bool) -> str | None:
        """One heartbeat; returns the signal sent through Redis (``TSTP``/``TERM``), if any."""
        work = {
            tid: json.dumps({"queue": q, "payload": raw, "run_at": run_at})
            for tid, (q, raw, run_at) in list(busy.items())
        }
        store = self.app.store
        _, sig = store.heartbeat(
            self.identity,
            info=self.info,
            busy=len(work),
            beat=self.app.clock.time(),
            quiet=quiet,
            rss_kb=self._rss_proc.memory_info().rss // 1024,
            rtt_us=store.rtt_us(),
            work=work,
            process_ttl=60,
            liveness_ttl_ms=int(self.app.settings.liveness_ttl * 1000),
        )
        return sig


class Housekeeper:
    """The housekeeping loop: heartbeats, recovery sweeps and scheduled-set polls, each on its
    own jittered timetable."""

    def __init__(
        self,
        app: ProcessorHost,
        identity: str,
        beat: Callable[[], None],
        *,
        stopping: threading.Event,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.identity = identity
        self.beat = beat
        self.stopping = stopping
        self.rng = rng or random.Random()

    def run(self, stop: threading.Event) -> None:
        app, settings, rng = self.app, self.app.settings, self.rng
        clock = app.clock
        now = clock.monotonic()
        next_beat = now + settings.heartbeat_interval
        next_sweep = now + rng.uniform(0, settings.recovery_interval)
        next_poll = now + rng.uniform(0, settings.poll_interval_average)
        while not stop.is_set():
            now = clock.monotonic()
            try:
                if now >= next_beat:
                    next_beat = now + settings.heartbeat_interval
                    self.beat()
                if now >= next_sweep:
                    next_sweep = now + settings.recovery_interval * rng.uniform(0.8, 1.2)
                    self.sweep()
                if now >= next_poll and not self.stopping.is_set():
                    processes = app.store.process_count()
                    next_poll = now + scheduler.poll_interval(
                        settings.poll_interval_average, processes, rng
                    )
                    scheduler.enqueue_due(app)
            except redis.RedisError as exc:
                log.error("housekeeping failed: %s", exc)
            wake = min(next_beat, next_sweep, next_poll) - clock.monotonic()
            stop.wait(max(0.01, min(wake, 1.0)))

    def sweep(self) -> None:
        """Recover dead processes' jobs, if no other process swept this interval."""
        settings = self.app.settings
        if self.app.store.try_lock(
            "recovery", self.identity, int(settings.recovery_interval * 900)
        ):
            recovery.sweep(self.app, self.identity)


def run_periodic(app: ProcessorHost, stop: threading.Event, rng: random.Random) -> None:
    """Run the features' periodic tasks (cron, resuming deferred jobs...) until ``stop``, apart
    from the heartbeat so a slow task can never make this process look dead."""
    clock = app.clock
    start = clock.monotonic()
    due = {t.name: start + rng.uniform(0, t.interval) for t in app.periodic_tasks}
    while not stop.is_set():
        now = clock.monotonic()
        for task in app.periodic_tasks:
            if now >= due.get(task.name, now):
                due[task.name] = now + task.interval * rng.uniform(0.9, 1.1)
                try:
                    task.run()
                except Exception:
                    log.exception("periodic task %s failed", task.name)
        wake = min(due.values(), default=now + 1.0) - clock.monotonic()
        stop.wait(max(0.01, min(wake, 1.0)))
