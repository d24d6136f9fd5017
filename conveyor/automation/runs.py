"""What the workflow engine reports: runs, real-time task results and nodes, as frozen
dataclasses with ``as_dict()`` (JSON-native values for the HTTP API and the CLI).

>>> summary_vars(total=3, succeeded=2, failed=1, src_size=10, dest_size=8)["_complte_total"]
2
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class RunState(StrEnum):
    PREPARING = "preparing"
    EXECUTING = "executing"
    COMPLETING = "completing"
    DONE = "done"
    FAILED = "failed"
    #: Not finished within ``meta.runs.ttl``: ended by whichever node noticed.
    EXPIRED = "expired"


#: States after which nothing changes any more.
FINISHED_STATES = frozenset({RunState.DONE, RunState.FAILED, RunState.EXPIRED})


def summary_vars(
    *, total: int, succeeded: int, failed: int, src_size: int, dest_size: int
) -> dict[str, int]:
    """The variables the complete step receives (SPEC AUTO-5); ``_complte_total`` is the
    draft's spelling, kept beside the corrected ``_complete_total``."""
    return {
        "_request_total": total,
        "_complte_total": succeeded,
        "_complete_total": succeeded,
        "_fail_total": failed,
        "_src_size_total": src_size,
        "_dest_size_total": dest_size,
    }


@dataclass(frozen=True)
class RunInfo:
    """One batch run of a workflow as stored in Redis."""

    id: str
    workflow: str
    state: str
    #: The fence of the master that drives (or drove) the run; 0 until a master adopted it.
    fence: int
    total: int
    succeeded: int
    failed: int
    #: Tasks started and not ended yet.
    running: int
    src_size_total: int
    dest_size_total: int
    #: The summary variables (set when the run finished; computed from the counters before).
    summary: Mapping[str, Any]
    #: Node id of the master that adopted the run ('' until one did).
    master: str
    created_at: float
    finished_at: float | None
    error: str | None
    #: Request variables, and which steps the run includes.
    request: Mapping[str, Any] = field(default_factory=dict)
    prepare: bool = True
    execute: bool = True
    complete: bool = True
    source: str = ""
    #: The fence the task list was published under (task results must carry it).
    tasks_fence: int = 0
    #: How many times a master adopted the run (1 normally; more after master changes).
    adoptions: int = 0
    #: How many times the complete step was claimed (1 normally; 2 if a master died in it).
    complete_claims: int = 0

    @property
    def ended(self) -> int:
        """Tasks that ended (succeeded or failed)."""
        return self.succeeded + self.failed

    @property
    def finished(self) -> bool:
        """True once the run is ``done`` or ``failed``."""
        return self.state in FINISHED_STATES

    def as_dict(self) -> dict[str, Any]:
        """JSON-native values of every field."""
        out = asdict(self)
        out["summary"] = dict(self.summary)
        out["request"] = dict(self.request)
        return out

    @classmethod
    def from_record(cls, raw: Mapping[str, str]) -> RunInfo:
        """Build from the run hash (:meth:`AutomationStore.get`)."""

        def num(name: str) -> int:
            try:
                return int(float(raw.get(name) or 0))
            except ValueError:
                return 0

        succeeded, failed, total = num("succeeded"), num("failed"), num("total")
        src, dest = num("src_size_total"), num("dest_size_total")
        summary: Mapping[str, Any]
        if raw.get("summary"):
            summary = json.loads(raw["summary"])
        else:
            summary = summary_vars(
                total=total, succeeded=succeeded, failed=failed, src_size=src, dest_size=dest
            )
        finished = raw.get("finished_at")
        return cls(
            id=raw.get("id", ""),
            workflow=raw.get("workflow", ""),
            state=raw.get("state", ""),
            fence=num("fence"),
            total=total,
            succeeded=succeeded,
            failed=failed,
            running=max(0, num("started") - succeeded - failed),
            src_size_total=src,
            dest_size_total=dest,
            summary=summary,
            master=raw.get("master", ""),
            created_at=float(raw.get("created_at") or 0),
            finished_at=float(finished) if finished else None,
            error=raw.get("error") or None,
            request=json.loads(raw.get("request") or "{}"),
            prepare=raw.get("prepare") == "1",
            execute=raw.get("execute", "1") != "0",
            complete=raw.get("complete") == "1",
            source=raw.get("source", ""),
            tasks_fence=num("tasks_fence"),
            adoptions=num("adoptions"),
            complete_claims=num("complete_claims"),
        )


@dataclass(frozen=True)
class TaskResult:
    """One execute task: in real-time mode the HTTP response, in batch mode what is recorded
    per task (with its run id and index)."""

    workflow: str
    ok: bool
    returncode: int | None
    timed_out: bool
    duration: float
    facts: Mapping[str, Any]
    error: str | None
    node: str
    #: One line for the log: workflow, task, outcome, duration, sizes.
    log: str
    #: The tail of the step's output.
    output: str = ""
    run_id: str | None = None
    index: int | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-native values of every field."""
        out = asdict(self)
        out["facts"] = dict(self.facts)
        out["vars"] = dict(self.vars)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        """Rebuild from :meth:`as_dict` (a node's answer to a real-time request)."""

        def text(name: str) -> str | None:
            value = data.get(name)
            return None if value is None else str(value)

        returncode = data.get("returncode")
        index = data.get("index")
        return cls(
            workflow=str(data.get("workflow", "")),
            ok=bool(data.get("ok")),
            returncode=int(returncode) if isinstance(returncode, int) else None,
            timed_out=bool(data.get("timed_out")),
            duration=float(data.get("duration") or 0.0),
            facts=dict(data.get("facts") or {}),
            error=text("error"),
            node=str(data.get("node", "")),
            log=str(data.get("log", "")),
            output=str(data.get("output") or ""),
            run_id=text("run_id"),
            index=int(index) if isinstance(index, int) else None,
            vars=dict(data.get("vars") or {}),
        )


@dataclass(frozen=True)
class NodeInfo:
    """One node (worker process) as its last heartbeat described it."""

    id: str
    host: str
    pid: int
    last_seen: float
    #: True while the node takes no tasks of at least one workflow.
    throttled: bool
    #: The node's CPU average (percent), ``None`` before the first sample.
    cpu_average: float | None
    #: Workflow name -> fence of the term this node is master of.
    masters: Mapping[str, int]
    #: Workflow name -> throttle snapshot (state, average, thresholds, transitions).
    throttle: Mapping[str, Any] = field(default_factory=dict)
    #: Throttle state changes since the node started (summed over workflows).
    transitions: int = 0
    #: Tasks this node ran since it started.
    tasks_run: int = 0
    #: The workflows whose batch tasks, and whose real-time tasks, this node takes (its task
    #: queues).
    workflows: tuple[str, ...] = ()
    realtime_workflows: tuple[str, ...] = ()
    #: Workflow name -> what keeps failing for it on this node (error, since, attempts).
    faults: Mapping[str, Any] = field(default_factory=dict)
    #: Real-time steps this node runs at most at once, and runs now.
    realtime_slots: int = 0
    realtime_running: int = 0

    def accepts(self, workflow: str, *, realtime: bool = False) -> bool:
        """Whether this node takes ``workflow``'s (batch or real-time) tasks now: it listens
        on the queue and is not throttled."""
        state = dict(self.throttle.get(workflow) or {}).get("state", "accepting")
        served = self.realtime_workflows if realtime else self.workflows
        return workflow in served and state != "throttled"

    def as_dict(self) -> dict[str, Any]:
        """JSON-native values of every field."""
        out = asdict(self)
        out["masters"] = dict(self.masters)
        out["throttle"] = dict(self.throttle)
        out["faults"] = dict(self.faults)
        out["workflows"] = list(self.workflows)
        out["realtime_workflows"] = list(self.realtime_workflows)
        return out

    @classmethod
    def from_beat(cls, info: Mapping[str, Any]) -> NodeInfo:
        """Build from a heartbeat object (:meth:`NodeMonitor.info`)."""
        average = info.get("cpu_average")
        return cls(
            id=str(info.get("id", "")),
            host=str(info.get("host", "")),
            pid=int(info.get("pid", 0)),
            last_seen=float(info.get("last_seen", 0)),
            throttled=bool(info.get("throttled", False)),
            cpu_average=None if average is None else float(average),
            masters={str(k): int(v) for k, v in dict(info.get("masters") or {}).items()},
            throttle=dict(info.get("throttle") or {}),
            transitions=int(info.get("transitions", 0)),
            tasks_run=int(info.get("tasks_run", 0)),
            workflows=tuple(str(w) for w in info.get("workflows") or ()),
            realtime_workflows=tuple(str(w) for w in info.get("realtime_workflows") or ()),
            faults=dict(info.get("faults") or {}),
            realtime_slots=int(info.get("realtime_slots", 0)),
            realtime_running=int(info.get("realtime_running", 0)),
        )
