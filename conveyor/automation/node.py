"""One automation node: its CPU throttle, its heartbeat, and the process entry point.

Every node samples its CPU once per ``meta.cpuAverage.interval`` and feeds one
:class:`~conveyor.automation.throttle.Throttle` per workflow (the thresholds are per workflow,
the average is the node's). While a workflow's throttle says *throttled*, the worker leaves that
workflow's task queue out of fetching (``App.gate_queue``): its tasks wait in Redis for nodes
with CPU to spare. Jobs already fetched still run. The heartbeat (``conveyor:automation:nodes``)
carries the throttle state and the workflows this node is master of.

>>> serve("/usr/local/m2/setting.json", redis_url="redis://10.0.0.5:6379/0")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from conveyor.automation.settings import load_automation_settings
from conveyor.automation.throttle import SampleSource, Throttle, psutil_cpu_source

if TYPE_CHECKING:
    from conveyor.automation.engine import Automation
    from conveyor.automation.master import LeadershipFactory

log = logging.getLogger("conveyor.automation")


class NodeMonitor:
    """The throttles and the heartbeat of one node."""

    def __init__(self, automation: Automation, source: SampleSource | None = None) -> None:
        self.automation = automation
        self._source = source
        average = automation.settings.meta.cpu_average
        self.throttles = {
            wf.name: Throttle.from_settings(wf.throttling, average)
            for wf in automation.settings.workflows
        }
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.tasks_run = 0
        self.last_sample: float | None = None
        self._lock = threading.Lock()

    def gate(self, workflow: str) -> Callable[[], bool]:
        """The queue gate of ``workflow``'s tasks: open while its throttle accepts."""
        throttle = self.throttles[workflow]
        return lambda: throttle.accepting

    def accepting(self, workflow: str) -> bool:
        """Whether this node takes ``workflow``'s tasks now."""
        throttle = self.throttles.get(workflow)
        return throttle is None or throttle.accepting

    @property
    def throttled(self) -> bool:
        return any(not t.accepting for t in self.throttles.values())

    @property
    def average(self) -> float | None:
        for throttle in self.throttles.values():
            return throttle.average
        return None

    def count_task(self) -> None:
        with self._lock:
            self.tasks_run += 1

    def sample(self) -> None:
        """Take one CPU sample and feed every workflow's throttle."""
        if self._source is None:
            self._source = psutil_cpu_source()
        value = float(self._source())
        self.last_sample = value
        for name, throttle in self.throttles.items():
            before = throttle.state
            after = throttle.update(value)
            if after is not before:
                log.info(
                    "automation %s: node %s %s (cpu average %.1f%%)",
                    name,
                    self.automation.node,
                    after.value,
                    throttle.average or 0.0,
                )

    def info(self) -> dict[str, Any]:
        """The heartbeat object (what :class:`~conveyor.automation.runs.NodeInfo` reads)."""
        average = self.average
        return {
            "id": self.automation.node,
            "host": self.host,
            "pid": self.pid,
            "last_seen": self.automation.clock.time(),
            "throttled": self.throttled,
            "cpu_average": None if average is None else round(average, 2),
            "cpu_sample": self.last_sample,
            "masters": self.automation.master.masters(),
            "throttle": {
                name: {**t.snapshot(), "transitions": t.transitions}
                for name, t in self.throttles.items()
            },
            "transitions": sum(t.transitions for t in self.throttles.values()),
            "tasks_run": self.tasks_run,
            "master_stats": dict(self.automation.master.stats),
        }

    def beat(self) -> None:
        """The periodic task: sample, then publish the heartbeat."""
        try:
            self.sample()
        except Exception:
            log.exception("automation: CPU sample failed; throttle state unchanged")
        try:
            self.automation.store.beat(self.automation.node, self.info())
        except redis.RedisError as exc:
            log.error("automation: node heartbeat failed: %s", exc)


def serve(
    settings_file: str,
    *,
    redis_url: str | None = None,
    threads: int | None = None,
    term: float | None = None,
    node: str | None = None,
    cpu_source: SampleSource | None = None,
    leadership: LeadershipFactory | None = None,
) -> None:
    """Run one automation node until SIGTERM/SIGINT: a worker on the workflows' task queues
    with the master loop and the node heartbeat installed. Core settings (heartbeat, recovery,
    ...) come from ``CONVEYOR_*`` as for ``conveyor worker``; ``threads`` is the number of
    tasks run at once."""
    from conveyor import logs
    from conveyor.automation.engine import DEFAULT_TERM, Automation
    from conveyor.core.worker import Worker
    from conveyor.features import App
    from conveyor.settings import Settings

    auto_settings = load_automation_settings(settings_file)
    core = Settings.load(redis_url=redis_url, concurrency=threads)
    app = App(core)
    automation = Automation(
        app,
        auto_settings,
        node=node,
        term=term or DEFAULT_TERM,
        cpu_source=cpu_source,
        leadership=leadership,
    )
    if automation.queues:
        app.configure(dataclasses.replace(core, queues=tuple((q, 1) for q in automation.queues)))
    logs.configure(app.settings)
    automation.install()
    worker = Worker(app, identity=automation.node)
    logs.bind_process(worker=worker.identity)
    try:
        worker.run()
    finally:
        automation.close()
        app.close()
