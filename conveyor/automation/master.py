"""The master of each workflow (SPEC AUTO-3, AUTO-5, AUTO-9): hold the lease, create scheduled
runs, adopt unfinished runs, run prepare and complete — on this node, in threads of their own.

:meth:`Master.tick` is a periodic task of the worker process (about every ``term / 10``
seconds): it renews or acquires each workflow's lease (``Leadership.tick``) and, while the term
is safely valid (``Leadership.current``), drives the workflow's unfinished runs. The prepare and
complete steps run in daemon threads, never in the periodic thread, which must keep renewing the
lease however long a playbook takes.

Fencing: every master write (create a scheduled run, adopt, publish the task list, claim the
complete step, finish) carries the term's fence and is refused in Redis (Lua) when a newer fence
has been seen for the workflow; :meth:`Master.still_master` is checked right before each write
too, so a master that was paused past its term (SIGSTOP, a long GC, a frozen VM) stops acting
before Redis even has to refuse it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import redis
from croniter import croniter

from conveyor.automation.runner import StepResult, run_step
from conveyor.automation.runs import RunInfo, RunState, summary_vars
from conveyor.automation.settings import Workflow, merge_vars
from conveyor.automation.urls import parse_task_line
from conveyor.errors import ConveyorError

if TYPE_CHECKING:
    from conveyor.automation.engine import Automation
    from conveyor.automation.lease import Term

log = logging.getLogger("conveyor.automation")

#: A prepare step may run this long (the draft gives prepare no timeout field).
DEFAULT_PREPARE_TIMEOUT = 600.0


class LeadershipLike(Protocol):
    """What the master needs from :class:`conveyor.automation.lease.Leadership`."""

    def tick(self) -> Term | None: ...

    def current(self) -> Term | None: ...


#: Builds the leadership of one workflow (default: its ``leaderElection`` lease).
LeadershipFactory = Callable[[Workflow], LeadershipLike]


class Master:
    """Master duties of one node for every enabled workflow."""

    def __init__(self, automation: Automation, factory: LeadershipFactory) -> None:
        self.automation = automation
        self.factory = factory
        self.leaders: dict[str, LeadershipLike] = {}
        #: Fence of the term this node holds per workflow (for the node heartbeat).
        self.fences: dict[str, int] = {}
        self._busy: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._last_tick: dict[str, float] = {}
        #: Counters for status pages and tests.
        self.stats = {"prepares": 0, "publishes": 0, "completes": 0, "rejected": 0, "stood_down": 0}

    # -- leadership -----------------------------------------------------------------------------
    def leader(self, workflow: Workflow) -> LeadershipLike:
        """The leadership of ``workflow`` on this node (created on first use)."""
        found = self.leaders.get(workflow.name)
        if found is None:
            found = self.leaders[workflow.name] = self.factory(workflow)
        return found

    def still_master(self, workflow: str, fence: int) -> bool:
        """Whether this node still holds the term ``fence`` of ``workflow``, safely."""
        leader = self.leaders.get(workflow)
        term = leader.current() if leader is not None else None
        if term is not None and term.fence == fence:
            return True
        with self._lock:
            self.stats["stood_down"] += 1
        log.warning("automation %s: no longer master (term %d); not acting", workflow, fence)
        return False

    def masters(self) -> dict[str, int]:
        """Workflow -> fence of each term this node holds now."""
        out: dict[str, int] = {}
        for name, leader in list(self.leaders.items()):
            term = leader.current()
            if term is not None:
                out[name] = term.fence
        return out

    # -- the periodic task ----------------------------------------------------------------------
    def tick(self) -> None:
        """Renew or acquire each workflow's lease, then drive its runs while master."""
        for workflow in self.automation.enabled_workflows():
            leader = self.leader(workflow)
            try:
                leader.tick()
            except Exception:
                log.exception("automation %s: lease tick failed", workflow.name)
            term = leader.current()
            if term is None:
                self.fences.pop(workflow.name, None)
                continue
            if self.fences.get(workflow.name) != term.fence:
                log.info(
                    "automation %s: node %s is master (fence %d)",
                    workflow.name,
                    self.automation.node,
                    term.fence,
                )
                self.fences[workflow.name] = term.fence
            try:
                self._schedule(workflow, term.fence)
                self._drive(workflow, term.fence)
            except (redis.RedisError, ConveyorError) as exc:
                log.error("automation %s: master round failed: %s", workflow.name, exc)

    def _schedule(self, workflow: Workflow, fence: int) -> None:
        """Create a run for the latest tick of the prepare schedule, once per tick."""
        prepare = workflow.steps.prepare
        if prepare is None or not prepare.schedule:
            return
        now = self.automation.clock.time()
        start = dt.datetime.fromtimestamp(now).astimezone()
        tick = float(croniter(prepare.schedule, start).get_prev(float))
        if self._last_tick.get(workflow.name) == tick:
            return
        if not self.still_master(workflow.name, fence):
            return
        outcome = self.automation.store.create_run(
            self.automation.new_run_id(),
            workflow.name,
            request={},
            prepare=True,
            complete=True,
            source="schedule",
            now=now,
            fence=fence,
            cron_tick=tick,
        )
        if outcome == "stale":
            self._rejected(workflow.name, "create a scheduled run")
            return
        self._last_tick[workflow.name] = tick
        if outcome == "created":
            log.info("automation %s: scheduled run for tick %.0f", workflow.name, tick)

    def _drive(self, workflow: Workflow, fence: int) -> None:
        store = self.automation.store
        for run_id in store.active(workflow.name):
            raw = store.get(run_id)
            if raw is None:
                continue
            state = raw.get("state", "")
            if int(raw.get("fence") or 0) != fence:
                if not self.still_master(workflow.name, fence):
                    return
                outcome, state = store.adopt(run_id, workflow.name, fence, self.automation.node)
                if outcome == "stale":
                    self._rejected(workflow.name, f"adopt run {run_id}")
                    return
                if outcome == "missing":
                    continue
                if outcome == "adopted":
                    log.info("automation %s: adopted run %s (%s)", workflow.name, run_id, state)
            if state == RunState.PREPARING:
                self._spawn(workflow, run_id, "prepare", fence)
            elif state == RunState.COMPLETING:
                self._spawn(workflow, run_id, "complete", fence)

    def _spawn(self, workflow: Workflow, run_id: str, step: str, fence: int) -> None:
        key = (run_id, step)
        with self._lock:
            if key in self._busy:
                return
            self._busy.add(key)
        target = self._prepare if step == "prepare" else self._complete

        def run() -> None:
            try:
                target(workflow, run_id, fence)
            except Exception:
                log.exception("automation %s: %s of run %s failed", workflow.name, step, run_id)
            finally:
                with self._lock:
                    self._busy.discard(key)

        name = f"conveyor-automation-{step}-{run_id[:8]}"
        threading.Thread(target=run, name=name, daemon=True).start()

    def _rejected(self, workflow: str, what: str) -> None:
        with self._lock:
            self.stats["rejected"] += 1
        log.warning("automation %s: Redis refused a stale master write (%s)", workflow, what)

    # -- prepare --------------------------------------------------------------------------------
    def _prepare(self, workflow: Workflow, run_id: str, fence: int) -> None:
        auto = self.automation
        run = auto.run_status(run_id)
        if run is None or run.state != RunState.PREPARING:
            return
        with self._lock:
            self.stats["prepares"] += 1
        tasks, error = self._task_list(workflow, run)
        if not self.still_master(workflow.name, fence):
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
            self._rejected(workflow.name, f"publish the tasks of run {run_id}")
        elif outcome == "published":
            with self._lock:
                self.stats["publishes"] += 1
            log.info("automation %s: run %s has %d task(s)", workflow.name, run_id, len(tasks))

    def _task_list(
        self, workflow: Workflow, run: RunInfo
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The run's tasks (each a dict of request variables), or an error."""
        prepare = workflow.steps.prepare
        if not run.prepare or prepare is None:
            # No prepare step: the request itself is the run's one task.
            return [dict(run.request)], None
        auto = self.automation
        fd, path = tempfile.mkstemp(prefix=f"{workflow.name}-", suffix=".txt", dir=auto.work_dir)
        os.close(fd)
        try:
            variables = merge_vars(workflow.vars, prepare.vars, run.request, {"prepare_path": path})
            result = run_step(
                prepare.playbook,
                variables,
                timeout=auto.prepare_timeout,
                base_dir=auto.settings.base_dir,
                grace=auto.grace,
            )
            if not result.ok:
                return [], f"prepare step failed: {result.error}"
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return self._parse_tasks(workflow, run, lines)

    def _parse_tasks(
        self, workflow: Workflow, run: RunInfo, lines: list[str]
    ) -> tuple[list[dict[str, Any]], str | None]:
        keyword = self.automation.settings.meta.keyword
        tasks: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                request = parse_task_line(line, keyword)
            except ConveyorError as exc:
                return [], f"prepare file line {number}: {exc}"
            if request.workflow != workflow.name:
                return [], (
                    f"prepare file line {number} names workflow {request.workflow!r}, "
                    f"not {workflow.name!r}"
                )
            tasks.append(merge_vars(run.request, request.vars))
        return tasks, None

    # -- complete -------------------------------------------------------------------------------
    def _complete(self, workflow: Workflow, run_id: str, fence: int) -> None:
        auto = self.automation
        if not self.still_master(workflow.name, fence):
            return
        outcome, _ = auto.store.claim_complete(run_id, workflow.name, fence, auto.clock.time())
        if outcome == "stale":
            self._rejected(workflow.name, f"claim the complete step of run {run_id}")
            return
        # 'held': this term claimed it before and that attempt ended without finishing the run
        # (an error, or a moment without a trusted term); _spawn keeps attempts one at a time.
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
            with self._lock:
                self.stats["completes"] += 1
            variables = merge_vars(workflow.vars, step.vars, run.request, summary)
            result = run_step(
                step.playbook,
                variables,
                timeout=step.timeout,
                base_dir=auto.settings.base_dir,
                grace=auto.grace,
            )
        if not self.still_master(workflow.name, fence):
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
        step_record = None
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
            self._rejected(workflow.name, f"finish run {run.id}")
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
