"""Housekeeping of a worker process (SPEC CORE-3, CORE-6, CORE-7): the heartbeat, the orphan
recovery sweep, reconciling the process's own working list, the scheduled-set poller and the
features' periodic tasks. The sweep and the poller are the functions of
:mod:`conveyor.core.recovery` and :mod:`conveyor.core.scheduler`."""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
from collections import Counter

import psutil

from conveyor.core import recovery, scheduler
from conveyor.core.health import Health
from conveyor.core.payload import parse, queue_of
from conveyor.core.processor import ProcessorHost
from conveyor.core.units import Units
from conveyor.errors import PayloadError
from conveyor.redis import Store

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

    def __init__(
        self, app: ProcessorHost, identity: str, *, started_at: float, store: Store | None = None
    ) -> None:
        self.app = app
        self.identity = identity
        self.store = store or app.store
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

    def beat(self, busy: BusyMap, *, quiet: bool, health: str = "{}") -> tuple[str | None, bool]:
        """One heartbeat; returns the signal sent through Redis (``TSTP``/``TERM``) if any, and
        whether the liveness key still existed (``False``: the process may have been taken
        for dead and its jobs recovered elsewhere)."""
        work = {
            tid: json.dumps({"queue": q, "payload": raw, "run_at": run_at})
            for tid, (q, raw, run_at) in list(busy.items())
        }
        store = self.store
        _, sig, alive = store.heartbeat(
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
            health=health,
        )
        return sig, alive


class Reconciler:
    """Finds entries of this process's own working list that no part of it holds (the reply
    of a fetch was lost: the jobs moved, the process never saw them) and gives them back.

    An entry goes back once it was unheld at two passes ``recovery_interval`` apart while no
    fetch call that began before the first pass was still under way (its reply could still
    bring the entry), so a job being fetched or acknowledged right now is never taken."""

    def __init__(self, app: ProcessorHost, identity: str, units: Units, store: Store) -> None:
        self.app = app
        self.identity = identity
        self.units = units
        self.store = store
        self._suspects: Counter[str] = Counter()
        self._since: float | None = None

    def pass_once(self) -> int:
        """One pass; returns how many entries went back to their queues."""
        entries = self.store.working_jobs(self.identity)
        now = self.units.clock.monotonic()  # the clock the units stamp fetch calls with
        unheld, fetching_since = self.units.unheld(entries)
        stale: Counter[str] = Counter()
        if self._since is not None and (fetching_since is None or fetching_since > self._since):
            stale = unheld & self._suspects
        self._suspects, self._since = unheld - stale, now
        if not stale:
            return 0
        jobs = [(self._queue_for(raw), raw) for raw in stale.elements()]
        moved = self.store.requeue(self.identity, jobs)
        log.warning(
            "worker %s: %d job(s) in its working list that it never received (a lost fetch "
            "reply) went back to their queues",
            self.identity,
            moved,
        )
        return moved

    def _queue_for(self, raw: str) -> str:
        try:
            return queue_of(parse(raw), self.app.settings.queue_names[0])
        except PayloadError:  # the next fetch quarantines it
            return self.app.settings.queue_names[0]


class Housekeeper:
    """The housekeeping loop: recovery sweeps, reconciliation and scheduled-set polls, each on
    its own jittered timetable (the heartbeat has its own thread)."""

    def __init__(
        self,
        app: ProcessorHost,
        identity: str,
        *,
        units: Units,
        health: Health,
        stopping: threading.Event,
        store: Store | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.identity = identity
        self.health = health
        self.stopping = stopping
        self.store = store or app.store
        self.rng = rng or random.Random()
        self.reconciler = Reconciler(app, identity, units, self.store)
        now = app.clock.monotonic()
        settings = app.settings
        self._next_sweep = now + self.rng.uniform(0, settings.recovery_interval)
        self._next_reconcile = now + settings.recovery_interval
        self._next_poll = now + self.rng.uniform(0, settings.poll_interval_average)

    def step(self, stop: threading.Event) -> bool:
        """Whatever is due now, then wait until the next thing is."""
        app, settings, rng = self.app, self.app.settings, self.rng
        clock = app.clock
        now = clock.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + settings.recovery_interval * rng.uniform(0.8, 1.2)
            self.sweep()
        if now >= self._next_reconcile:
            self._next_reconcile = now + settings.recovery_interval
            self.reconciler.pass_once()
        if now >= self._next_poll and not self.stopping.is_set():
            processes = self.store.process_count()
            self._next_poll = now + scheduler.poll_interval(
                settings.poll_interval_average, processes, rng
            )
            scheduler.enqueue_due(app, store=self.store)
        wake = min(self._next_sweep, self._next_reconcile, self._next_poll) - clock.monotonic()
        stop.wait(max(0.01, min(wake, 1.0)))
        return True

    def sweep(self) -> None:
        """Recover dead processes' jobs, if no other process swept this interval. Not until
        Redis has answered for a whole liveness TTL (after an outage or a restart, live
        processes need that long to refresh their liveness keys, or they would look dead)."""
        settings, store = self.app.settings, self.store
        # A live process's heartbeat retries at least every half interval (its loop's
        # back-off): two intervals past the TTL leave room for its reconnect.
        settle = settings.liveness_ttl + 2 * settings.heartbeat_interval
        if self.health.redis_quiet_for() < settle or store.server_uptime() < settle:
            log.debug("sweep skipped: Redis came back less than %.0fs ago", settle)
            return
        if store.try_lock("recovery", self.identity, int(settings.recovery_interval * 900)):
            recovery.sweep(self.app, self.identity, store)


class Periodic:
    """The features' periodic tasks (cron, resuming deferred jobs...), in a thread apart from
    the heartbeat so a slow task can never make this process look dead."""

    def __init__(self, app: ProcessorHost, rng: random.Random) -> None:
        self.app = app
        self.rng = rng
        start = app.clock.monotonic()
        self.due = {t.name: start + rng.uniform(0, t.interval) for t in app.periodic_tasks}

    def step(self, stop: threading.Event) -> bool:
        clock = self.app.clock
        now = clock.monotonic()
        for task in self.app.periodic_tasks:
            if now >= self.due.get(task.name, now):
                self.due[task.name] = now + task.interval * self.rng.uniform(0.9, 1.1)
                try:
                    task.run()
                except Exception:
                    log.exception("periodic task %s failed", task.name)
        wake = min(self.due.values(), default=now + 1.0) - clock.monotonic()
        stop.wait(max(0.01, min(wake, 1.0)))
        return True
