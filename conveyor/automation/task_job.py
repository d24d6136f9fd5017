"""The execute task of a batch run, as an ordinary Conveyor job (DESIGN: work items travel as
jobs, so every node's worker pool runs them and reliable fetch recovers them after a crash).

Wire name ``conveyor.AutomationTask``; args ``[workflow, run_id, index, fence, vars]``. Each
:class:`~conveyor.automation.engine.Automation` registers its own subclass bound to itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from conveyor.core.job import ServiceJob
from conveyor.core.payload import Payload

TASK = "conveyor.AutomationTask"
#: Retries of a task whose *bookkeeping* failed (Redis unreachable); a failing playbook is a
#: recorded task failure, never retried.
TASK_RETRIES = 5


class TaskRunner(Protocol):
    """What the task job needs of :class:`~conveyor.automation.engine.Automation`."""

    def execute_task(
        self, workflow: str, run_id: str, index: int, fence: int, variables: dict[str, Any]
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
