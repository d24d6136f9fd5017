"""The execute tasks, as ordinary Conveyor jobs (DESIGN: work items travel as jobs, so every
node's worker pool runs them and reliable fetch recovers them after a crash).

- ``conveyor.AutomationTask``, args ``[workflow, run_id, index, fence, vars]``: one task of a
  batch run, on the queue ``automation.<workflow>``.
- ``conveyor.AutomationRealtime``, args ``[workflow, request_id, vars, deadline]``: one real-time
  task handed over by the process that took the HTTP request (which waits for the answer), on
  the queue ``automation-rt.<workflow>``. Never retried: its caller is waiting.

Each :class:`~conveyor.automation.engine.Automation` registers its own subclasses bound to
itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from conveyor.core.job import ServiceJob
from conveyor.core.payload import Payload

TASK = "conveyor.AutomationTask"
REALTIME = "conveyor.AutomationRealtime"
#: Retries of a task whose *bookkeeping* failed (Redis unreachable); a failing playbook is a
#: recorded task failure, never retried.
TASK_RETRIES = 5


class TaskRunner(Protocol):
    """What the task job needs of :class:`~conveyor.automation.engine.Automation`."""

    def execute_task(
        self, workflow: str, run_id: str, index: int, fence: int, variables: dict[str, Any]
    ) -> None: ...

    def execute_realtime(
        self, workflow: str, request_id: str, variables: dict[str, Any], deadline: float
    ) -> None: ...

    def give_up_task(
        self,
        workflow: str,
        run_id: str,
        index: int,
        fence: int,
        variables: dict[str, Any],
        *,
        exc: BaseException,
    ) -> None: ...


class TaskJob(ServiceJob[TaskRunner]):
    """Runs one execute task of a run and records its result once (bound to one engine with
    ``TaskJob.bind(automation)``)."""

    def perform(
        self, workflow: str, run_id: str, index: int, fence: int, variables: dict[str, Any]
    ) -> None:
        self.service.execute_task(workflow, run_id, index, fence, variables)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        # Count the task as failed, so the run still reaches its complete step.
        args = job.get("args", [])
        if len(args) == 5:
            workflow, run_id, index, fence, variables = args
            self.service.give_up_task(workflow, run_id, index, fence, variables, exc=exc)


class RealtimeJob(ServiceJob[TaskRunner]):
    """Runs one real-time task and answers the waiting request (bound with
    ``RealtimeJob.bind(automation)``)."""

    def perform(
        self, workflow: str, request_id: str, variables: dict[str, Any], deadline: float
    ) -> None:
        self.service.execute_realtime(workflow, request_id, variables, deadline)
