"""The workflow engine (SPEC AUTO-3 … AUTO-9): batch runs, real-time tasks, nodes.

Batch mode: :meth:`Automation.start_run` (any node, the HTTP API, the CLI) or the prepare
``schedule`` (the master) creates a run in Redis; the workflow's master adopts it, runs the
prepare step on its own node and publishes the task list, one Conveyor job per task on the
workflow's task queue (``automation.<workflow>``); every node's workers run the tasks (each
result is recorded once, by task index); when the last task has ended the master runs the
complete step with the summary variables, once per run. Real-time mode:
:meth:`Automation.run_task` runs one execute task on this node and returns its result.

Call :meth:`Automation.install` in the worker processes that act as nodes (``conveyor
automation node`` does); processes that only start runs or read them (the web app) create an
:class:`Automation` without installing it.

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
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from conveyor.automation import task_job as jobs
from conveyor.automation.master import DEFAULT_PREPARE_TIMEOUT, LeadershipFactory, Master
from conveyor.automation.node import NodeMonitor
from conveyor.automation.runner import StepResult, run_step
from conveyor.automation.runs import NodeInfo, RunInfo, TaskResult
from conveyor.automation.settings import AutomationSettings, LeaderElection, Workflow
from conveyor.automation.throttle import SampleSource
from conveyor.clock import SYSTEM_CLOCK, Clock
from conveyor.core.extensions import ExtensionKey
from conveyor.core.job import ServiceJob
from conveyor.core.payload import Payload, dumps
from conveyor.errors import ConfigurationError, WorkflowForbidden, WorkflowNotFound
from conveyor.redis.automation import AutomationStore

if TYPE_CHECKING:
    from conveyor.automation.master import LeadershipLike
    from conveyor.core.app import App

log = logging.getLogger("conveyor.automation")

#: The master's term (SPEC AUTO-9: 5 minutes).
DEFAULT_TERM = 300.0
#: Task queues are named ``automation.<workflow>``.
QUEUE_PREFIX = "automation."
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
        #: Where prepare files are created (``prepare_path``).
        self.work_dir = work_dir or tempfile.gettempdir()
        self.grace = grace
        self.master = Master(self, leadership or self._default_leadership)
        self.monitor = NodeMonitor(self, cpu_source)
        self.task_job: type[ServiceJob[jobs.TaskRunner]] | None = None
        self.installed = False

    # -- setup ----------------------------------------------------------------------------------
    @property
    def store(self) -> AutomationStore:
        return AutomationStore(self.app.store)

    def enabled_workflows(self) -> list[Workflow]:
        """Workflows that run: automation enabled (``meta.enable``) and the workflow enabled."""
        if not self.settings.meta.enable:
            return []
        return [wf for wf in self.settings.workflows if wf.enable]

    def queue(self, workflow: str) -> str:
        """The task queue of ``workflow``."""
        return f"{QUEUE_PREFIX}{workflow}"

    @property
    def queues(self) -> tuple[str, ...]:
        """The task queues a node's worker must listen on."""
        return tuple(self.queue(wf.name) for wf in self.enabled_workflows())

    def install(self) -> None:
        """Make this process a node: register the task job, gate each task queue with its
        workflow's throttle, and add the master loop and the node heartbeat as periodic tasks.
        The worker must listen on :attr:`queues`."""
        if AUTOMATION in self.app.extensions:
            raise ConfigurationError("this app already has an Automation installed")
        self.task_job = self.app.register(
            jobs.TaskJob.bind(self),
            name=jobs.TASK,
            retry=jobs.TASK_RETRIES,
            queue=QUEUE_PREFIX + "any",
        )
        self.app.extensions[AUTOMATION] = self
        self.app.interrupted_handlers.append(self._on_interrupted)
        self.installed = True
        if not self.settings.meta.enable:
            log.warning("automation is disabled (meta.enable is false); this node runs nothing")
            return
        for workflow in self.enabled_workflows():
            self.app.gate_queue(self.queue(workflow.name), self.monitor.gate(workflow.name))
        missing = sorted(set(self.queues) - set(self.app.settings.queue_names))
        if missing:
            log.warning(
                "automation: this worker does not listen on %s; its node takes no tasks "
                "(add the queues, or run `conveyor automation node`)",
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
            state_dir=self.app.settings.state_dir,
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
        (``"cli"``, ``"schedule"``, ...) is trusted. With ``prepare=False`` (or a workflow
        without a prepare step) the request variables are the run's one task. With
        ``execute=False`` (``/steps/execute=false``) no task runs: prepare's list is discarded
        and complete gets zero totals.
        """
        wf = self.workflow(workflow, source=source)
        variables = _check_vars(request_vars)
        run_id = self.new_run_id()
        self.store.create_run(
            run_id,
            wf.name,
            request=variables,
            prepare=prepare,
            complete=complete,
            source=source,
            now=self.clock.time(),
            execute=execute,
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
        """Real-time mode: run one execute task on this node now, without prepare or complete,
        and return its result (throttling does not apply: the caller chose this node)."""
        wf = self.workflow(workflow, source=source)
        variables = _check_vars(request_vars)
        result = self._execute(wf, variables)
        task = self._task_result(wf.name, result, variables)
        log.info("%s", task.log)
        return task

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

    # -- the task job ---------------------------------------------------------------------------
    def task_payload(
        self, workflow: str, run_id: str, index: int, fence: int, variables: Mapping[str, Any]
    ) -> str:
        """The Conveyor job of one task (pushed by the publish script)."""
        name = self.task_job.wire_name() if self.task_job is not None else jobs.TASK
        _, job = self.app.client.build(name, [workflow, run_id, index, fence, dict(variables)], {})
        job["queue"] = self.queue(workflow)
        job["retry"] = jobs.TASK_RETRIES
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
            store.hand_back(
                self.queue(workflow), self.task_payload(workflow, run_id, index, fence, variables)
            )
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
        try:
            wf = self.settings.workflow(workflow)
        except KeyError:
            result = StepResult(False, None, False, 0.0, "", {}, f"unknown workflow {workflow!r}")
            wf = None
        if wf is not None:
            result = self._execute(wf, variables)
        task = self._task_result(workflow, result, variables, run_id=run_id, index=index)
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
        log.info("%s [%s]", task.log, recorded.outcome)

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

    def _execute(self, wf: Workflow, variables: Mapping[str, Any]) -> StepResult:
        """Run the execute step once on this node (workflow < step < request/task vars)."""
        execute = wf.steps.execute
        return run_step(
            execute.playbook,
            wf.step_vars("execute", variables),
            timeout=execute.timeout,
            base_dir=self.settings.base_dir,
            grace=self.grace,
        )

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
        line = (
            f"automation {workflow} {where} on {self.node}: {outcome} in {result.duration:.2f}s"
            f"{sizes}{'' if result.ok else f' ({result.error})'}"
        )
        return TaskResult(
            workflow=workflow,
            ok=result.ok,
            returncode=result.returncode,
            timed_out=result.timed_out,
            duration=round(result.duration, 3),
            facts=dict(result.facts),
            error=result.error,
            node=self.node,
            log=line,
            output=result.output,
            run_id=run_id,
            index=index,
            vars=dict(variables),
        )


def _check_vars(request_vars: Mapping[str, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (request_vars or {}).items():
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"request variable names must be non-empty strings, got {key!r}"
            )
        out[key] = value if isinstance(value, str) else str(value)
    return out


def _size(value: Any) -> int:
    """A byte count from a fact (int, float or numeric string); anything else counts 0."""
    try:
        return max(0, int(float(value)))
    except (TypeError, ValueError):
        return 0


#: The app's installed :class:`Automation` in ``app.extensions``.
AUTOMATION: ExtensionKey[Automation] = ExtensionKey("automation")
