"""Per-workflow automation metrics: what nodes count in Redis, and the Prometheus collector the
web app's /metrics serves them with (issue #16).

Nodes add to one hash per workflow (``conveyor:automation:metrics:<workflow>``), one script call
per event: tasks started, succeeded, failed and timed out (label ``mode``: ``batch`` or
``realtime``), step durations as histogram buckets (label ``step``: prepare, execute,
complete), runs finished by state (``done``, ``failed``, ``expired``), master changes and
conflicts (two masters with one fence). At scrape time the collector adds what Redis knows
already: unfinished runs by state, the nodes that run a workflow and how many are throttled or
report a fault, and the rejected stale master writes.

>>> sorted(task_fields("batch", ok=False, timed_out=True))
['tasks_failed|batch', 'tasks_timed_out|batch']
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from conveyor.automation.runs import NodeInfo
from conveyor.automation.settings import AutomationSettings
from conveyor.redis.automation import AutomationStore

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

#: Upper bounds (seconds) of the step duration histogram's buckets.
BUCKETS: tuple[float, ...] = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, math.inf)
MODES = ("batch", "realtime")
STEPS = ("prepare", "execute", "complete")
RUN_STATES = ("done", "failed", "expired")
ACTIVE_STATES = ("preparing", "executing", "completing")


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def step_fields(step: str, seconds: float) -> dict[str, float]:
    """The hash increments of one step that took ``seconds`` (cumulative buckets).

    >>> step_fields("execute", 3.0)["step_seconds|execute|le|5"]
    1
    """
    out: dict[str, float] = {
        f"step_seconds|{step}|count": 1,
        f"step_seconds|{step}|sum": float(seconds),
    }
    for bound in BUCKETS:
        if seconds <= bound:
            out[f"step_seconds|{step}|le|{_le(bound)}"] = 1
    return out


def task_fields(mode: str, *, ok: bool, timed_out: bool) -> dict[str, float]:
    """The hash increments of one task that ended."""
    if ok:
        return {f"tasks_succeeded|{mode}": 1}
    out: dict[str, float] = {f"tasks_failed|{mode}": 1}
    if timed_out:
        out[f"tasks_timed_out|{mode}"] = 1
    return out


class MetricsSource(Protocol):
    """What the collector reads (an :class:`~conveyor.automation.engine.Automation`)."""

    settings: AutomationSettings

    @property
    def store(self) -> AutomationStore: ...

    def nodes(self) -> list[NodeInfo]: ...

    def rejected_writes(self, workflow: str) -> int: ...


class AutomationCollector:
    """Prometheus collector of every configured workflow's metrics, read at scrape time."""

    def __init__(self, automation: MetricsSource) -> None:
        self.automation = automation

    def collect(self) -> Iterator[Metric]:
        auto = self.automation
        store = auto.store
        names = [wf.name for wf in auto.settings.workflows]
        counts = {name: store.metrics(name) for name in names}
        label = ["workflow", "mode"]
        for what, doc in (
            ("started", "Automation tasks started."),
            ("succeeded", "Automation tasks that succeeded."),
            ("failed", "Automation tasks that failed (timed out included)."),
            ("timed_out", "Automation tasks killed at their timeout."),
        ):
            family = CounterMetricFamily(f"conveyor_automation_tasks_{what}", doc, labels=label)
            for name in names:
                for mode in MODES:
                    family.add_metric([name, mode], counts[name].get(f"tasks_{what}|{mode}", 0))
            yield family
        yield self._durations(names, counts)
        yield from self._runs(names, counts)
        yield from self._cluster(names, counts)

    def _durations(self, names: list[str], counts: dict[str, dict[str, float]]) -> Metric:
        family = HistogramMetricFamily(
            "conveyor_automation_step_duration_seconds",
            "How long automation steps ran.",
            labels=["workflow", "step"],
        )
        for name in names:
            values = counts[name]
            for step in STEPS:
                count = values.get(f"step_seconds|{step}|count", 0)
                if not count:
                    continue
                buckets = [
                    (_le(b), values.get(f"step_seconds|{step}|le|{_le(b)}", 0)) for b in BUCKETS
                ]
                total = values.get(f"step_seconds|{step}|sum", 0.0)
                family.add_metric([name, step], buckets, sum_value=total)
        return family

    def _runs(self, names: list[str], counts: dict[str, dict[str, float]]) -> Iterator[Metric]:
        finished = CounterMetricFamily(
            "conveyor_automation_runs_finished",
            "Automation batch runs that ended, by final state.",
            labels=["workflow", "state"],
        )
        active = GaugeMetricFamily(
            "conveyor_automation_runs",
            "Unfinished automation batch runs, by state.",
            labels=["workflow", "state"],
        )
        for name in names:
            for state in RUN_STATES:
                finished.add_metric([name, state], counts[name].get(f"runs_finished|{state}", 0))
            states = self.automation.store.active_states(name)
            for state in ACTIVE_STATES:
                active.add_metric([name, state], states.get(state, 0))
        yield finished
        yield active

    def _cluster(self, names: list[str], counts: dict[str, dict[str, float]]) -> Iterator[Metric]:
        nodes = self.automation.nodes()
        families = {
            "nodes": GaugeMetricFamily(
                "conveyor_automation_nodes", "Live nodes that run a workflow.", labels=["workflow"]
            ),
            "throttled": GaugeMetricFamily(
                "conveyor_automation_throttled_nodes",
                "Live nodes that take none of a workflow's tasks now (CPU throttle).",
                labels=["workflow"],
            ),
            "faults": GaugeMetricFamily(
                "conveyor_automation_workflow_faults",
                "Live nodes reporting a fault of a workflow (lease, settings, Redis).",
                labels=["workflow"],
            ),
        }
        changes = CounterMetricFamily(
            "conveyor_automation_master_changes",
            "New master terms acted under.",
            labels=["workflow"],
        )
        conflicts = CounterMetricFamily(
            "conveyor_automation_master_conflicts",
            "Times a node found another master with its fence and refused to act.",
            labels=["workflow"],
        )
        rejected = CounterMetricFamily(
            "conveyor_automation_rejected_writes",
            "Fenced master writes refused as stale.",
            labels=["workflow"],
        )
        for name in names:
            serving = [n for n in nodes if name in n.workflows]
            families["nodes"].add_metric([name], len(serving))
            throttled = [n for n in serving if not n.accepts(name)]
            families["throttled"].add_metric([name], len(throttled))
            families["faults"].add_metric([name], sum(1 for n in nodes if name in n.faults))
            changes.add_metric([name], counts[name].get("master_changes", 0))
            conflicts.add_metric([name], counts[name].get("master_conflicts", 0))
            rejected.add_metric([name], self.automation.rejected_writes(name))
        yield from families.values()
        yield changes
        yield conflicts
        yield rejected
