"""The workflow engine (SPEC AUTO-3 … AUTO-9): batch runs, real-time tasks, nodes.

Batch mode: :meth:`Automation.start_run` (any node, the HTTP API, the CLI) or the prepare
``schedule`` (the master) creates a run in Redis; the workflow's master adopts it, runs the
prepare step on its own node and publishes the task list, one Conveyor job per task on the
workflow's task queue (``automation.<workflow>``); every node's workers run the tasks (each
result is recorded once, by task index); when the last task has ended the master runs the
complete step with the summary variables, once per run. Real-time mode:
:meth:`Automation.run_task` hands one execute task to a node's worker pool
(``automation-rt.<workflow>``) and waits for its answer, so throttling, the per-node real-time
limit and the metrics apply to it as to any task.

Call :meth:`Automation.install` in the worker processes that act as nodes (``conveyor
automation node`` does); processes that only start runs or read them (the web app, the CLI)
create an :class:`Automation` without installing it.

>>> settings = load_automation_settings("/usr/local/m2/setting.json")        # doctest: +SKIP
>>> automation = Automation(app, settings)                                   # doctest: +SKIP
>>> automation.install()                                                     # doctest: +SKIP
>>> run = automation.start_run("migrate_tmpimg", source="cli")               # doctest: +SKIP
>>> automation.run_status(run.id).state                                      # doctest: +SKIP
'executing'
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import redis

from conveyor.automation import task_job as jobs
from conveyor.automation import workflow_metrics as metrics
from conveyor.automation._interfaces import LeadershipFactory, LeadershipLike
from conveyor.automation.batch import resolve_work_dir
from conveyor.automation.master import DEFAULT_PREPARE_TIMEOUT, Master
from conveyor.automation.node import NodeMonitor
from conveyor.automation.realtime import hand_over
from conveyor.automation.runner import StepResult, run_step
from conveyor.automation.runs import NodeInfo, RunInfo, TaskResult
from conveyor.automation.settings import AutomationSettings, LeaderElection, Workflow
from conveyor.automation.throttle import SampleSource
from conveyor.automation.variables import check_caller_vars, redact
from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.core.extensions import ExtensionKey
from conveyor.core.job import ServiceJob
from conveyor.core.payload import Payload, dumps
from conveyor.errors import (
    AutomationBusyError,
    ConfigurationError,
    ConveyorError,
    WorkflowForbidden,
    WorkflowNotFound,
)
from conveyor.redis.automation import AutomationStore

if TYPE_CHECKING:
    from conveyor.core.app import App

log = logging.getLogger("conveyor.automation")

#: The master's term (SPEC AUTO-9: 5 minutes).
DEFAULT_TERM = 300.0
#: Task queues are named ``automation.<workflow>`` (batch) and ``automation-rt.<workflow>``.
QUEUE_PREFIX = "automation."
REALTIME_PREFIX = "automation-rt."
#: Real-time queues are fetched this many times as often as batch ones: a caller waits.
REALTIME_WEIGHT = 5
#: Sources whose calls are client calls: they need ``allowApiExecution``.
CLIENT_SOURCES = frozenset({"api"})
#: Characters of a task's output kept in its recorded result (the tail).
RECORDED_OUTPUT = 2000


def make_node_id() -> str:
    """``hostname:pid:nonce``, like a worker identity."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Automation:
    """The workflow engine of one process: the service the HTTP API and the CLI call, and (once
    :meth:`install` ed) a node taking part in runs."""

    def __init__(
        self,
        app: App,
        settings: AutomationSettings,
        *,
        node: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        term: float = DEFAULT_TERM,
        cpu_source: SampleSource | None = None,
        leadership: LeadershipFactory | None = None,
        prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT,
        work_dir: str | None = None,
        grace: float = 5.0,
    ) -> None:
        if term <= 0:
            raise ConfigurationError(f"the master term must be > 0 seconds, got {term!r}")
        self.app = app
        self.settings = settings
        self.node = node or make_node_id()
        self.clock = clock
        self.term = float(term)
        self.prepare_timeout = prepare_timeout
        self._work_dir = work_dir
        self.grace = grace
        self.master = Master(self, leadership or self._default_leadership)
        self.monitor = NodeMonitor(self, cpu_source)
        self.task_job: type[ServiceJob[jobs.TaskRunner]] | None = None
        self.installed = False

    # -- setup ----------------------------------------------------------------------------------
    @property
    def store(self) -> AutomationStore:
        return AutomationStore(self.app.store)

    @property
    def work_dir(self) -> str:
        """Where prepare files (``prepare_path``) are created: ``meta.workDir``, else
        ``/workflow`` when it is a writable directory, else ``<state dir>/workflow``."""
        if self._work_dir is None:
            self._work_dir = resolve_work_dir(
                self.settings.meta.work_dir, self.app.settings.state_dir
            )
        return self._work_dir

    def enabled_workflows(self) -> list[Workflow]:
        """Workflows that run: automation enabled (``meta.enable``) and the workflow enabled."""
        if not self.settings.meta.enable:
            return []
        return [wf for wf in self.settings.workflows if wf.enable]

    def queue(self, workflow: str) -> str:
        """The batch task queue of ``workflow``."""
        return f"{QUEUE_PREFIX}{workflow}"

    def realtime_queue(self, workflow: str) -> str:
        """The real-time task queue of ``workflow``."""
        return f"{REALTIME_PREFIX}{workflow}"

    @property
    def queues(self) -> tuple[tuple[str, int], ...]:
        """The task queues (with fetch weights) a node's worker must listen on."""
        out: list[tuple[str, int]] = []
        for wf in self.enabled_workflows():
            out += [(self.queue(wf.name), 1), (self.realtime_queue(wf.name), REALTIME_WEIGHT)]
        return tuple(out)

    def install(self) -> None:
        """Make this process a node: register the task jobs, gate each task queue with its
        workflow's throttle, and add the master loop and the node heartbeat as periodic tasks.
        The worker must listen on :attr:`queues`."""
        if AUTOMATION in self.app.extensions:
            raise ConfigurationError("this app already has an Automation installed")
        self.task_job = self.app.register(
            jobs.TaskJob.bind(self), name=jobs.TASK, retry=jobs.TASK_RETRIES, queue="automation.any"
        )
        self.app.register(
            jobs.RealtimeJob.bind(self), name=jobs.REALTIME, retry=0, queue="automation-rt.any"
        )
        self.app.extensions[AUTOMATION] = self
        self.app.interrupted_handlers.append(self._on_interrupted)
        self.installed = True
        if not self.settings.meta.enable:
            log.warning("automation is disabled (meta.enable is false); this node runs nothing")
            return
        listening = set(self.app.settings.queue_names)
        for workflow in self.enabled_workflows():
            self.app.gate_queue(self.queue(workflow.name), self.monitor.gate(workflow.name))
            gate = self.monitor.realtime_gate(workflow.name)
            self.app.gate_queue(self.realtime_queue(workflow.name), gate)
        names = [wf.name for wf in self.enabled_workflows()]
        self.monitor.served = tuple(n for n in names if self.queue(n) in listening)
        self.monitor.served_realtime = tuple(
            n for n in names if self.realtime_queue(n) in listening
        )
        missing = sorted({q for q, _ in self.queues} - listening)
        if missing:
            log.warning(
                "automation: this worker does not listen on %s; its node takes none of their "
                "tasks (add the queues, or run `conveyor automation node`)",
                ", ".join(missing),
            )
        interval = min(1.0, self.term / 10)
        self.app.add_periodic("automation-master", interval, self.master.tick)
        beat = self.settings.meta.cpu_average.interval
        self.app.add_periodic("automation-node", beat, self.monitor.beat)

    def close(self) -> None:
        """Leave: give up held leases (so another node takes over at once) and drop the node
        from :meth:`nodes`."""
        for leader in list(self.master.leaders.values()):
            resign = getattr(leader, "resign", None)
            if callable(resign):
                try:
                    resign()
                except Exception:
                    log.exception("automation: releasing a lease failed")
        try:
            self.store.forget_node(self.node)
        except Exception:
            log.exception("automation: could not remove node %s", self.node)

    def _default_leadership(self, workflow: Workflow) -> LeadershipLike:
        from conveyor.automation.lease import Leadership, open_lease

        prepare = workflow.steps.prepare
        election = prepare.leader_election if prepare is not None else LeaderElection()
        lease = open_lease(
            election,
            workflow.name,
            redis_client=self.app.store.client,
            store=self.app.store,
            clock=self.clock,
        )
        return Leadership(lease, self.node, term=self.term, clock=self.clock)

    # -- the service ----------------------------------------------------------------------------
    def workflow(self, name: str, *, source: str = "api") -> Workflow:
        """The enabled workflow ``name``; :class:`WorkflowNotFound` if there is none (or it or
        automation is disabled), :class:`WorkflowForbidden` for a client call (``source="api"``)
        of a workflow without ``allowApiExecution``."""
        for workflow in self.enabled_workflows():
            if workflow.name == name:
                if source in CLIENT_SOURCES and not workflow.allow_api_execution:
                    raise WorkflowForbidden(
                        f"workflow {name!r} does not allow API execution; set "
                        '"allowApiExecution": true in its settings to allow it',
                        name,
                    )
                return workflow
        known = ", ".join(wf.name for wf in self.enabled_workflows()) or "none"
        raise WorkflowNotFound(f"no enabled workflow named {name!r} (enabled: {known})", name)

    def new_run_id(self) -> str:
        """A run id that sorts by creation time: milliseconds in hex, then 48 random bits."""
        return f"{int(self.clock.time() * 1000):012x}{secrets.token_hex(6)}"

    def start_run(
        self,
        workflow: str,
        *,
        request_vars: Mapping[str, str] | None = None,
        prepare: bool = True,
        complete: bool = True,
        source: str = "api",
        execute: bool = True,
    ) -> RunInfo:
        """Start a batch run; the workflow's master adopts it within a master tick.

        ``source="api"`` is a client call and needs ``allowApiExecution``; any other source
        (``"cli"``, ``"schedule"``, ...) is trusted to start runs. Whatever the source, the
        request variables may not name an operator or engine variable
        (:class:`~conveyor.errors.VariableRejected`), and a workflow with
        ``meta.runs.maxUnfinished`` unfinished runs refuses more
        (:class:`~conveyor.errors.AutomationBusyError`). With ``prepare=False`` (or a workflow
        without a prepare step) the request variables are the run's one task. With
        ``execute=False`` no task runs: prepare's list is discarded and complete gets zero
        totals.
        """
        wf = self.workflow(workflow, source=source)
        variables = check_caller_vars(wf, request_vars)
        run_id = self.new_run_id()
        cap = self.settings.meta.runs.max_unfinished
        outcome = self.store.create_run(
            run_id,
            wf.name,
            request=variables,
            prepare=prepare,
            complete=complete,
            source=source,
            now=self.clock.time(),
            execute=execute,
            max_unfinished=cap,
        )
        if outcome == "full":
            raise AutomationBusyError(
                f"workflow {wf.name!r} has {cap} unfinished runs (meta.runs.maxUnfinished); "
                "wait for some to end",
                retry_after=30.0,
            )
        found = self.run_status(run_id)
        assert found is not None  # just created
        log.info("automation %s: run %s requested (%s)", wf.name, run_id, source)
        return found

    def run_task(
        self,
        workflow: str,
        *,
        request_vars: Mapping[str, str] | None = None,
        source: str = "api",
    ) -> TaskResult:
        """Real-time mode: hand one execute task (no prepare, no complete) to a node that takes
        the workflow's tasks now, wait for it and return its result. Raises
        :class:`~conveyor.errors.AutomationUnavailableError` when no node runs the workflow or every
        one is throttled, :class:`~conveyor.errors.AutomationBusyError` when every real-time slot is
        taken. A node that does not answer in time gives a timed-out result."""
        wf = self.workflow(workflow, source=source)
        variables = check_caller_vars(wf, request_vars)
        return hand_over(self, wf, variables)

    def run_status(self, run_id: str) -> RunInfo | None:
        """The run ``run_id``, or ``None`` (unknown or expired)."""
        raw = self.store.get(run_id)
        return None if raw is None else RunInfo.from_record(raw)

    def runs(self, workflow: str | None = None, limit: int = 20) -> list[RunInfo]:
        """The newest runs, newest first."""
        store = self.store
        out: list[RunInfo] = []
        gone: list[str] = []
        for run_id in store.run_ids(workflow, limit):
            info = self.run_status(run_id)
            if info is None:
                gone.append(run_id)
            else:
                out.append(info)
        store.forget(gone, workflow)
        return out

    def task_results(self, run_id: str) -> dict[int, dict[str, Any]]:
        """Task index -> recorded result (ok, duration, facts, error, node, log line)."""
        return self.store.results(run_id)

    def nodes(self) -> list[NodeInfo]:
        """Nodes with a recent heartbeat."""
        return [NodeInfo.from_beat(info) for info in self.store.nodes(self.clock.time())]

    def rejected_writes(self, workflow: str) -> int:
        """How many stale fenced writes Redis refused for ``workflow``."""
        return self.store.rejected(workflow)

    @property
    def throttled(self) -> bool:
        """Whether this node takes no tasks of some workflow now."""
        return self.monitor.throttled

    # -- the task jobs --------------------------------------------------------------------------
    def task_payload(
        self, workflow: str, run_id: str, index: int, fence: int, variables: Mapping[str, Any]
    ) -> str:
        """The Conveyor job of one batch task (pushed by the publish script)."""
        args = [workflow, run_id, index, fence, dict(variables)]
        return self._payload(jobs.TASK, args, self.queue(workflow), jobs.TASK_RETRIES)

    def realtime_payload(
        self, workflow: str, request_id: str, variables: Mapping[str, str], deadline: float
    ) -> str:
        """The Conveyor job of one real-time task (pushed by the admit script)."""
        args = [workflow, request_id, dict(variables), deadline]
        return self._payload(jobs.REALTIME, args, self.realtime_queue(workflow), 0)

    def _payload(self, name: str, args: list[Any], queue: str, retry: int) -> str:
        _, job = self.app.client.build(name, args, {})
        job["queue"] = queue
        job["retry"] = retry
        job["enqueued_at"] = job["created_at"]
        return dumps(job)

    def execute_task(
        self, workflow: str, run_id: str, index: int, fence: int, variables: Mapping[str, Any]
    ) -> None:
        """Run task ``index`` of a run (the task job's body) and record its result once."""
        store = self.store
        if workflow in self.monitor.throttles and not self.monitor.accepting(workflow):
            # Fetched in the instant the gate closed (a blocking fetch was already waiting):
            # give it back for a node with CPU to spare.
            payload = self.task_payload(workflow, run_id, index, fence, variables)
            store.hand_back(self.queue(workflow), payload)
            log.info(
                "automation %s: run %s task %d handed back (throttled)", workflow, run_id, index
            )
            return
        decision = store.task_start(run_id, workflow, index, fence, self.node)
        if decision != "run":
            log.info(
                "automation %s: run %s task %d not run (%s)", workflow, run_id, index, decision
            )
            return
        self._count(workflow, {"tasks_started|batch": 1})
        result = self._execute_named(workflow, variables)
        task = self._task_result(workflow, result, variables, run_id=run_id, index=index)
        # Counted before the record that may end the run: a reader of the run sees it.
        self.monitor.count_task()
        record = task.as_dict()
        record["output"] = task.output[-RECORDED_OUTPUT:]
        record["ended_at"] = self.clock.time()
        recorded = store.record(
            run_id,
            workflow,
            index=index,
            fence=fence,
            ok=task.ok,
            src_size=_size(task.facts.get("src_size")),
            dest_size=_size(task.facts.get("dest_size")),
            result=record,
        )
        self._ended(workflow, "batch", result)
        log.info("%s [%s]", task.log, recorded.outcome)

    def execute_realtime(
        self, workflow: str, request_id: str, variables: dict[str, Any], deadline: float
    ) -> None:
        """Run one real-time task (the real-time job's body) and answer its caller."""
        if self.clock.time() > deadline:
            log.info("automation %s: real-time task dropped (its caller gave up)", workflow)
            return
        if not self.monitor.accepting(workflow) or not self.monitor.take_realtime_slot():
            # Fetched as the gate closed (throttled, or every real-time slot taken meanwhile).
            payload = self.realtime_payload(workflow, request_id, variables, deadline)
            self.store.hand_back(self.realtime_queue(workflow), payload)
            return
        try:
            self._count(workflow, {"tasks_started|realtime": 1})
            result = self._execute_named(workflow, variables)
            task = self._task_result(workflow, result, variables)
            self.monitor.count_task()
            keep = max(60.0, deadline - self.clock.time())
            self.store.realtime_reply(request_id, task.as_dict(), keep)
            self._ended(workflow, "realtime", result)
            log.info("%s", task.log)
        finally:
            self.monitor.free_realtime_slot()

    def give_up_task(
        self,
        workflow: str,
        run_id: str,
        index: int,
        fence: int,
        variables: Mapping[str, Any],
        *,
        exc: BaseException,
    ) -> None:
        """A task job out of retries: record the task as failed so the run can complete."""
        result = StepResult(False, None, False, 0.0, "", {}, f"task gave up: {exc}")
        task = self._task_result(workflow, result, variables, run_id=run_id, index=index)
        self.store.record(
            run_id,
            workflow,
            index=index,
            fence=fence,
            ok=False,
            src_size=0,
            dest_size=0,
            result=task.as_dict(),
        )

    def _on_interrupted(self, job: Payload) -> None:
        """A task job parked in the interrupted set (its workers died too often while running
        it): record the task as failed, so the run still reaches its complete step. The job
        stays parked for an operator; re-running it cannot count the task twice."""
        args = job.get("args")
        if job.get("class") != jobs.TASK or not isinstance(args, list) or len(args) != 5:
            return
        workflow, run_id, index, fence, variables = args
        times = job.get("interrupted_count")
        self.give_up_task(
            workflow,
            run_id,
            index,
            fence,
            variables if isinstance(variables, dict) else {},
            exc=RuntimeError(f"interrupted {times} times, parked in the interrupted set"),
        )

    def _execute_named(self, workflow: str, variables: Mapping[str, Any]) -> StepResult:
        """Run ``workflow``'s execute step here, refusing what no caller may send (a task
        queued by hand, or under older settings)."""
        try:
            wf = self.settings.workflow(workflow)
            data = check_caller_vars(wf, variables, where="the task")
        except KeyError:
            return StepResult(False, None, False, 0.0, "", {}, f"unknown workflow {workflow!r}")
        except ConveyorError as exc:
            return StepResult(False, None, False, 0.0, "", {}, str(exc))
        return self.execute_step(wf, data)

    def execute_step(self, wf: Workflow, data: Mapping[str, str]) -> StepResult:
        """Run the execute step once on this node: the operator's variables (workflow < step)
        and the caller's ``data`` (never templated)."""
        execute = wf.steps.execute
        result = run_step(
            execute.playbook,
            wf.step_vars("execute"),
            data=data,
            timeout=execute.timeout,
            base_dir=self.settings.base_dir,
            grace=self.grace,
        )
        self.record_step(wf.name, "execute", result)
        return result

    # -- metrics --------------------------------------------------------------------------------
    def record_step(self, workflow: str, step: str, result: StepResult) -> None:
        """Count one step's duration in the workflow's histogram."""
        self._count(workflow, metrics.step_fields(step, result.duration))

    def _ended(self, workflow: str, mode: str, result: StepResult) -> None:
        self._count(workflow, metrics.task_fields(mode, ok=result.ok, timed_out=result.timed_out))

    def _count(self, workflow: str, counts: Mapping[str, float]) -> None:
        try:
            self.store.add_metrics(workflow, counts)
        except redis.RedisError as exc:  # metrics never fail a task
            log.warning("automation %s: metrics not recorded: %s", workflow, exc)

    def _task_result(
        self,
        workflow: str,
        result: StepResult,
        variables: Mapping[str, Any],
        *,
        run_id: str | None = None,
        index: int | None = None,
    ) -> TaskResult:
        where = f"run {run_id} task {index}" if run_id is not None else "real-time task"
        outcome = "ok" if result.ok else ("timed out" if result.timed_out else "failed")
        sizes = ""
        if "src_size" in result.facts or "dest_size" in result.facts:
            facts = result.facts
            sizes = f" src_size={facts.get('src_size')} dest_size={facts.get('dest_size')}"
        # The log line never carries a caller's values (the runner redacted the error already).
        error = redact(result.error, [str(v) for v in variables.values()])
        line = (
            f"automation {workflow} {where} on {self.node}: {outcome} in {result.duration:.2f}s"
            f"{sizes}{'' if result.ok else f' ({error})'}"
        )
        return TaskResult(
            workflow=workflow,
            ok=result.ok,
            returncode=result.returncode,
            timed_out=result.timed_out,
            duration=round(result.duration, 3),
            facts=dict(result.facts),
            error=error,
            node=self.node,
            log=line,
            output=result.output,
            run_id=run_id,
            index=index,
            vars=dict(variables),
        )


def _size(value: Any) -> int:
    """A byte count from a fact (int, float or numeric string); anything else counts 0."""
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError):
        return 0


#: The app's installed :class:`Automation` in ``app.extensions``.
AUTOMATION: ExtensionKey[Automation] = ExtensionKey("automation")
