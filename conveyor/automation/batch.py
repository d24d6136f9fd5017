"""The master's steps of a batch run: prepare (write and publish the task list) and complete
(the summary step, once per run), each run in a thread of its own by
:class:`~conveyor.automation.master.Master`.

Variables: the operator's (workflow ``vars`` < the step's ``vars``, then the engine's
``prepare_path`` or summary totals) reach the step as trusted values; the run's request
variables and each task line's variables are caller data (``!unsafe`` for Ansible, see
:mod:`conveyor.automation.variables`). A task line that names an operator or engine variable
fails the run with an error naming the variable, never its value.

>>> BatchSteps(automation, master).prepare(workflow, run_id, fence)      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any, Protocol

from conveyor.automation._interfaces import EngineLike
from conveyor.automation.runner import StepResult, run_step
from conveyor.automation.runs import RunInfo, RunState, summary_vars
from conveyor.automation.settings import Workflow, merge_vars
from conveyor.automation.urls import parse_task_line
from conveyor.automation.variables import check_caller_vars
from conveyor.errors import VariableRejected, WorkflowUrlError

log = logging.getLogger("conveyor.automation")

#: The manual's directory for prepare files ("always a temporary .txt under /workflow/").
MANUAL_WORK_DIR = "/workflow"


def resolve_work_dir(configured: str | None, state_dir: str) -> str:
    """Where prepare files go: ``meta.workDir`` (created if missing), else the manual's
    ``/workflow`` when it is a writable directory, else ``<state_dir>/workflow`` (created,
    0700: the files may name the data a run works on).

    >>> resolve_work_dir("/srv/conveyor/work", "/var/lib/conveyor")     # doctest: +SKIP
    '/srv/conveyor/work'
    """
    if configured:
        os.makedirs(configured, mode=0o700, exist_ok=True)
        return configured
    if os.path.isdir(MANUAL_WORK_DIR) and os.access(MANUAL_WORK_DIR, os.W_OK | os.X_OK):
        return MANUAL_WORK_DIR
    path = os.path.join(os.path.expanduser(state_dir), "workflow")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


class MasterCalls(Protocol):
    """What the steps need from the master loop."""

    def still_master(self, workflow: str, fence: int) -> bool: ...

    def rejected(self, workflow: str, what: str) -> None: ...

    def count(self, stat: str) -> None: ...


class BatchSteps:
    """Prepare and complete of one node's master role."""

    def __init__(self, automation: EngineLike, master: MasterCalls) -> None:
        self.automation = automation
        self.master = master

    # -- prepare --------------------------------------------------------------------------------
    def prepare(self, workflow: Workflow, run_id: str, fence: int) -> None:
        """Run the prepare step (if switched on) and publish the run's task list."""
        auto = self.automation
        run = auto.run_status(run_id)
        if run is None or run.state != RunState.PREPARING:
            return
        self.master.count("prepares")
        tasks, error = self._task_list(workflow, run)
        if not self.master.still_master(workflow.name, fence):
            return
        if error is not None:
            self._finish(workflow, run, fence, state=RunState.FAILED, error=error)
            return
        if not run.execute:
            tasks = []  # execute switched off: publish an empty list, so complete follows
        payloads = [
            auto.task_payload(workflow.name, run_id, i, fence, v) for i, v in enumerate(tasks)
        ]
        outcome, _ = auto.store.publish(
            run_id,
            workflow.name,
            fence=fence,
            queue=auto.queue(workflow.name),
            payloads=payloads,
            now=auto.clock.time(),
        )
        if outcome == "stale":
            self.master.rejected(workflow.name, f"publish the tasks of run {run_id}")
        elif outcome == "published":
            self.master.count("publishes")
            log.info("automation %s: run %s has %d task(s)", workflow.name, run_id, len(tasks))

    def _task_list(
        self, workflow: Workflow, run: RunInfo
    ) -> tuple[list[dict[str, str]], str | None]:
        """The run's tasks (each a dict of caller variables), or an error."""
        prepare = workflow.steps.prepare
        if not run.prepare or prepare is None:
            # No prepare step: the request itself is the run's one task.
            return [dict(run.request)], None
        auto = self.automation
        fd, path = tempfile.mkstemp(prefix=f"{workflow.name}-", suffix=".txt", dir=auto.work_dir)
        os.close(fd)
        try:
            result = run_step(
                prepare.playbook,
                merge_vars(workflow.step_vars("prepare"), {"prepare_path": path}),
                data=dict(run.request),
                timeout=auto.prepare_timeout,
                base_dir=auto.settings.base_dir,
                grace=auto.grace,
            )
            auto.record_step(workflow.name, "prepare", result)
            if not result.ok:
                return [], f"prepare step failed: {result.error}"
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return self._parse_tasks(workflow, run, lines)

    def _parse_tasks(
        self, workflow: Workflow, run: RunInfo, lines: list[str]
    ) -> tuple[list[dict[str, str]], str | None]:
        keyword = self.automation.settings.meta.keyword
        tasks: list[dict[str, str]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = f"prepare file line {number}"
            try:
                request = parse_task_line(line, keyword)
                variables = check_caller_vars(workflow, request.vars, where=where)
            except WorkflowUrlError:
                # The line's text may hold caller data (file names): it stays out of the error.
                return [], (
                    f"{where} is not a task in the URL form "
                    f"/{keyword}/workflows/{workflow.name}/vars/key=value;..."
                )
            except VariableRejected as exc:
                return [], str(exc)
            if request.workflow != workflow.name:
                return [], (f"{where} names workflow {request.workflow!r}, not {workflow.name!r}")
            # The run's request variables, then the line's (both caller data).
            tasks.append({**run.request, **variables})
        return tasks, None

    # -- complete -------------------------------------------------------------------------------
    def complete(self, workflow: Workflow, run_id: str, fence: int) -> None:
        """Claim the run's complete step, run it with the summary and finish the run."""
        auto = self.automation
        if not self.master.still_master(workflow.name, fence):
            return
        outcome, _ = auto.store.claim_complete(run_id, workflow.name, fence, auto.clock.time())
        if outcome == "stale":
            self.master.rejected(workflow.name, f"claim the complete step of run {run_id}")
            return
        # 'held': this term claimed it before and that attempt ended without finishing the run
        # (an error, or a moment without a trusted term); the master runs one attempt at a time.
        if outcome not in ("claimed", "taken-over", "held"):
            return
        run = auto.run_status(run_id)
        if run is None:
            return
        summary = summary_vars(
            total=run.total,
            succeeded=run.succeeded,
            failed=run.failed,
            src_size=run.src_size_total,
            dest_size=run.dest_size_total,
        )
        step = workflow.steps.complete
        result: StepResult | None = None
        if run.complete and step is not None:
            self.master.count("completes")
            result = run_step(
                step.playbook,
                # The engine's totals come last: they are what complete is for.
                merge_vars(workflow.step_vars("complete"), summary),
                data=dict(run.request),
                timeout=step.timeout,
                base_dir=auto.settings.base_dir,
                grace=auto.grace,
            )
            auto.record_step(workflow.name, "complete", result)
        if not self.master.still_master(workflow.name, fence):
            return  # the next master takes the claim over and runs the step again
        error = None if result is None or result.ok else f"complete step failed: {result.error}"
        self._finish(
            workflow,
            run,
            fence,
            state=RunState.FAILED if error else RunState.DONE,
            error=error,
            summary=summary,
            step=result,
        )

    def _finish(
        self,
        workflow: Workflow,
        run: RunInfo,
        fence: int,
        *,
        state: RunState,
        error: str | None,
        summary: dict[str, int] | None = None,
        step: StepResult | None = None,
    ) -> None:
        auto = self.automation
        step_record: dict[str, Any] | None = None
        if step is not None:
            step_record = {
                "ok": step.ok,
                "returncode": step.returncode,
                "timed_out": step.timed_out,
                "duration": round(step.duration, 3),
                "facts": step.facts,
                "error": step.error,
                "node": auto.node,
            }
        outcome, _ = auto.store.finish(
            run.id,
            workflow.name,
            fence=fence,
            state=state.value,
            now=auto.clock.time(),
            summary=summary or dict(run.summary),
            error=error,
            step=step_record,
        )
        if outcome == "stale":
            self.master.rejected(workflow.name, f"finish run {run.id}")
        elif outcome == "finished":
            log.info(
                "automation %s: run %s %s (%d ok, %d failed of %d)%s",
                workflow.name,
                run.id,
                state.value,
                run.succeeded,
                run.failed,
                run.total,
                f": {error}" if error else "",
            )
