"""The execute task of a batch run, as an ordinary Conveyor job (DESIGN: work items travel as
jobs, so every node's worker pool runs them and reliable fetch recovers them after a crash).

Wire name ``conveyor.AutomationTask``; args ``[workflow, run_id, index, fence, vars]``. Each
:class:`~conveyor.automation.engine.Automation` registers its own subclass bound to itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from conveyor.core.job import Job
from conveyor.core.payload import Payload

if TYPE_CHECKING:
    from conveyor.automation.engine import Automation

TASK = "conveyor.AutomationTask"
#: Retries of a task whose *bookkeeping* failed (Redis unreachable); a failing playbook is a
#: recorded task failure, never retried.
TASK_RETRIES = 5


class TaskJob(Job):
    """Runs one execute task of a run and records its result once."""

    automation: ClassVar[Automation]

    def perform(
        self, workflow: str, run_id: str, index: int, fence: int, variables: dict[str, Any]
    ) -> None:
        self.automation.execute_task(workflow, run_id, index, fence, variables)

    def retries_exhausted(self, job: Payload, exc: BaseException) -> None:
        # Count the task as failed, so the run still reaches its complete step.
        args = job.get("args", [])
        if len(args) == 5:
            workflow, run_id, index, fence, variables = args
            self.automation.give_up_task(workflow, run_id, index, fence, variables, exc=exc)


def bind(automation: Automation) -> type[TaskJob]:
    """A subclass of :class:`TaskJob` bound to ``automation``."""
    return type("TaskJob", (TaskJob,), {"automation": automation, "__module__": __name__})
