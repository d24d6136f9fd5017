"""One automation node: its CPU throttle, its real-time slots and its heartbeat.

Every node samples its CPU once per ``meta.cpuAverage.interval`` and feeds one
:class:`~conveyor.automation.throttle.Throttle` per workflow (the thresholds are per workflow,
the average is the node's). While a workflow's throttle says *throttled*, the worker leaves that
workflow's task queues (batch and real-time) out of fetching (``App.gate_queue``): its tasks
wait in Redis for nodes with CPU to spare. Jobs already fetched still run. A node runs at most
``meta.realtime.perNode`` real-time steps at once (its real-time queues close while they are
taken). The heartbeat (``conveyor:automation:nodes``) carries the throttle state, the workflows
this node serves and masters, its real-time slots and its faults.

>>> monitor = NodeMonitor(automation)                                  # doctest: +SKIP
>>> monitor.beat()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import redis

from conveyor.automation._interfaces import EngineLike
from conveyor.automation.throttle import SampleSource, Throttle, psutil_cpu_source

log = logging.getLogger("conveyor.automation")


class NodeMonitor:
    """The throttles and the heartbeat of one node."""

    def __init__(self, automation: EngineLike, source: SampleSource | None = None) -> None:
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
        #: Real-time steps this node runs at most at once, and runs now.
        self.realtime_slots = automation.settings.meta.realtime.per_node
        self.realtime_running = 0
        #: The workflows whose batch and real-time task queues this node's worker listens on
        #: (set at install).
        self.served: tuple[str, ...] = ()
        self.served_realtime: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def gate(self, workflow: str) -> Callable[[], bool]:
        """The queue gate of ``workflow``'s batch tasks: open while its throttle accepts."""
        throttle = self.throttles[workflow]
        return lambda: throttle.accepting

    def realtime_gate(self, workflow: str) -> Callable[[], bool]:
        """The queue gate of ``workflow``'s real-time tasks: open while its throttle accepts
        and a real-time slot is free."""
        throttle = self.throttles[workflow]
        return lambda: throttle.accepting and self.realtime_running < self.realtime_slots

    def take_realtime_slot(self) -> bool:
        """Take a real-time slot; ``False`` when every one is taken (hand the task back)."""
        with self._lock:
            if self.realtime_running >= self.realtime_slots:
                return False
            self.realtime_running += 1
            return True

    def free_realtime_slot(self) -> None:
        with self._lock:
            self.realtime_running = max(0, self.realtime_running - 1)

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
            "workflows": list(self.served),
            "realtime_workflows": list(self.served_realtime),
            "faults": self.automation.master.faults(),
            "realtime_slots": self.realtime_slots,
            "realtime_running": self.realtime_running,
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
