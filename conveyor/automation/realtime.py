"""Real-time tasks handed to the nodes (issues #15, #16): the process that took the HTTP request
(the web app) does not run the step itself; it hands it to a node's worker pool and waits.

:func:`hand_over`:

1. finds the live nodes that take the workflow's tasks (their heartbeats). None: no node runs
   the workflow (:class:`~conveyor.errors.AutomationUnavailableError`, HTTP 503). All throttled:
   the same, with a ``Retry-After`` of the throttle's dwell time;
2. in one Lua call, forgets requests whose callers gave up and pushes the task job only if
   fewer requests are in flight than the free real-time slots of those nodes
   (``meta.realtime.perNode`` each); else :class:`~conveyor.errors.AutomationBusyError` (429);
3. waits for the node's answer for the execute ``timeout`` plus the kill grace plus
   :data:`QUEUE_WAIT`. No answer in time is a timed-out result (HTTP 504).

A node takes a real-time job only while its throttle accepts and one of its real-time slots is
free (its queue gate, checked again when the job starts), so the per-node limit holds exactly;
the cluster-wide count in step 2 keeps callers from piling up behind busy nodes.

>>> hand_over(automation, workflow, {"file": "a.jpg"})           # doctest: +SKIP
TaskResult(workflow='resize', ok=True, ...)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Protocol

from conveyor.automation.runs import NodeInfo, TaskResult
from conveyor.automation.settings import AutomationSettings, Workflow
from conveyor.clock import Clock
from conveyor.errors import AutomationBusyError, AutomationUnavailableError
from conveyor.redis.automation import AutomationStore

#: Seconds a real-time task may wait for a worker thread of the node that took it.
QUEUE_WAIT = 30.0
#: ``Retry-After`` when no node runs the workflow at all.
RETRY_NO_NODE = 10.0
#: ``Retry-After`` when every slot is taken.
RETRY_BUSY = 2.0


class RealtimeHost(Protocol):
    """What :func:`hand_over` needs (an :class:`~conveyor.automation.engine.Automation`)."""

    settings: AutomationSettings
    clock: Clock
    grace: float

    @property
    def store(self) -> AutomationStore: ...

    def nodes(self) -> list[NodeInfo]: ...

    def realtime_payload(
        self, workflow: str, request_id: str, variables: Mapping[str, str], deadline: float
    ) -> str: ...

    def realtime_queue(self, workflow: str) -> str: ...


def capacity(nodes: list[NodeInfo], workflow: Workflow, dwell: float) -> int:
    """The real-time slots of the live nodes that take ``workflow``'s tasks now, or an
    :class:`AutomationUnavailableError` saying why there are none."""
    serving = [n for n in nodes if workflow.name in n.realtime_workflows]
    if not serving:
        raise AutomationUnavailableError(
            f"no automation node runs workflow {workflow.name!r}: start one with "
            "`conveyor automation node` (every node's settings must enable the workflow)",
            retry_after=RETRY_NO_NODE,
        )
    accepting = [n for n in serving if n.accepts(workflow.name, realtime=True)]
    if not accepting:
        raise AutomationUnavailableError(
            f"every node that runs workflow {workflow.name!r} is throttled (CPU average at or "
            f"above deactive {workflow.throttling.cpu.deactive:g}%); try again later",
            retry_after=max(5.0, dwell),
        )
    return sum(max(0, n.realtime_slots) for n in accepting)


def hand_over(host: RealtimeHost, workflow: Workflow, variables: Mapping[str, str]) -> TaskResult:
    """Run one execute task of ``workflow`` on a node and return its result (see the module
    docstring); ``variables`` were checked by the caller."""
    dwell = host.settings.meta.cpu_average.min_dwell
    slots = capacity(host.nodes(), workflow, dwell)
    wait = workflow.steps.execute.timeout + host.grace + QUEUE_WAIT
    now = host.clock.time()
    request_id = secrets.token_hex(12)
    payload = host.realtime_payload(workflow.name, request_id, variables, now + wait)
    admitted, busy = host.store.realtime_admit(
        request_id,
        queue=host.realtime_queue(workflow.name),
        payload=payload,
        capacity=slots,
        now=now,
        deadline=now + wait,
    )
    if not admitted:
        raise AutomationBusyError(
            f"every real-time slot is taken ({busy} of {slots} on the nodes that run "
            f"{workflow.name!r}; meta.realtime.perNode each); try again shortly",
            retry_after=RETRY_BUSY,
        )
    answer = host.store.realtime_wait(request_id, wait)
    if answer is None:
        return TaskResult(
            workflow=workflow.name,
            ok=False,
            returncode=None,
            timed_out=True,
            duration=round(wait, 3),
            facts={},
            error=f"no node answered within {wait:g}s",
            node="",
            log=f"automation {workflow.name} real-time task: no answer within {wait:g}s",
            vars=dict(variables),
        )
    return TaskResult.from_dict(answer)
