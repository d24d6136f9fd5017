"""The automation settings as frozen dataclasses (what :mod:`conveyor.automation.settings`
loads and validates).

>>> Playbook.parse("python:jobs.files:move").function
'move'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from conveyor.automation._check import parse_playbook
from conveyor.errors import AutomationSettingsError

DEFAULT_KEYWORD = "automation"
DEFAULT_EXECUTE_TIMEOUT = 180.0
DEFAULT_COMPLETE_TIMEOUT = 60.0
DEFAULT_DEACTIVE = 60.0
DEFAULT_REACTIVE = 40.0
DEFAULT_CPU_INTERVAL = 1.0
DEFAULT_CPU_WINDOW = 10.0
DEFAULT_MIN_DWELL = 15.0
DEFAULT_REALTIME_PER_NODE = 4
DEFAULT_MAX_UNFINISHED = 100
DEFAULT_RUN_TTL = 24 * 3600.0

LeaderType = Literal["file", "aws-s3", "redis"]
Mode = Literal["batch", "realtime"]
MODES: tuple[Mode, ...] = ("batch", "realtime")


@dataclass(frozen=True)
class Playbook:
    """What a step runs: an Ansible playbook path, or ``python:module:function``.

    >>> Playbook.parse("python:jobs.files:move").function
    'move'
    """

    #: The string as written in the settings.
    raw: str
    kind: Literal["ansible", "python"]
    #: The playbook path (``kind == "ansible"``); relative paths are relative to the settings file.
    path: str | None = None
    module: str | None = None
    function: str | None = None

    @classmethod
    def parse(cls, raw: str) -> Playbook:
        """Parse ``raw``; raises :class:`AutomationSettingsError` when it is malformed."""
        problem = parse_playbook(raw)
        if problem:
            raise AutomationSettingsError([f"playbook: {problem}"])
        if raw.startswith("python:"):
            _, module, function = raw.split(":")
            return cls(raw=raw, kind="python", module=module, function=function)
        return cls(raw=raw, kind="ansible", path=raw)


@dataclass(frozen=True)
class EndpointRef:
    """An ``authEndpoint`` of the form ``{endpoint}@{function}``, resolved against
    ``functions.backend.{function}.endpoints``."""

    endpoint: str
    function: str
    #: The endpoint's configuration object as written (credentials, bucket, region, ...).
    config: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.endpoint}@{self.function}"


@dataclass(frozen=True)
class LeaderElection:
    """Where the master lease of a workflow lives."""

    type: LeaderType = "file"
    #: Full lease path; one ending in ``/`` is a directory holding ``<workflow name>.txt``.
    #: ``None``: the lease lives in the cluster's Redis (shared by every node), whatever the
    #: type but ``aws-s3``. For ``redis`` the path names the lease key (default: the workflow).
    path: str | None = None
    auth_endpoint: EndpointRef | None = None

    def lease_path(self, workflow: str) -> str | None:
        """The lease file (or object key) for ``workflow``.

        >>> LeaderElection(path="/mnt/shared/").lease_path("migrate")
        '/mnt/shared/migrate.txt'
        """
        if self.path is None:
            return None
        return f"{self.path}{workflow}.txt" if self.path.endswith("/") else self.path


@dataclass(frozen=True)
class PrepareStep:
    """Runs on the master: writes the task list into the file passed as ``prepare_path``."""

    playbook: Playbook
    #: Cron expression (croniter syntax); ``None``: only when a run is requested.
    schedule: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    leader_election: LeaderElection = field(default_factory=LeaderElection)


@dataclass(frozen=True)
class ExecuteStep:
    """Runs once per task, in parallel on every node."""

    playbook: Playbook
    timeout: float = DEFAULT_EXECUTE_TIMEOUT
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CompleteStep:
    """Runs on the master after every task ended, with the run's summary variables."""

    playbook: Playbook
    timeout: float = DEFAULT_COMPLETE_TIMEOUT
    vars: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Steps:
    execute: ExecuteStep
    prepare: PrepareStep | None = None
    complete: CompleteStep | None = None


@dataclass(frozen=True)
class CpuThrottling:
    """``deactive``: stop taking tasks at or above this average CPU %; ``reactive``: resume
    below it. ``reactive`` is the effective value (the 2/3 rule already applied)."""

    deactive: float = DEFAULT_DEACTIVE
    reactive: float = DEFAULT_REACTIVE


@dataclass(frozen=True)
class Throttling:
    enable: bool = True
    cpu: CpuThrottling = field(default_factory=CpuThrottling)


@dataclass(frozen=True)
class CpuAverage:
    """The global basis of the CPU average (``meta.cpuAverage``, a Conveyor extension): one
    sample every ``interval`` seconds, averaged by an EWMA whose ``alpha`` defaults to
    ``2 / (window / interval + 1)``."""

    interval: float = DEFAULT_CPU_INTERVAL
    window: float = DEFAULT_CPU_WINDOW
    alpha: float | None = None
    #: Seconds a node stays in a throttle state before it may change again (no flapping).
    min_dwell: float = DEFAULT_MIN_DWELL

    @property
    def effective_alpha(self) -> float:
        """The EWMA weight of a new sample.

        >>> CpuAverage(interval=1, window=9).effective_alpha
        0.2
        """
        if self.alpha is not None:
            return self.alpha
        return 2.0 / (max(self.window / self.interval, 1.0) + 1.0)


@dataclass(frozen=True)
class Workflow:
    name: str
    steps: Steps
    description: str = ""
    enable: bool = True
    allow_api_execution: bool = False
    vars: Mapping[str, Any] = field(default_factory=dict)
    throttling: Throttling = field(default_factory=Throttling)
    #: What a call of the workflow's URL does by default (``?mode=`` overrides it).
    mode: Mode = "batch"
    #: Whether HTTP answers carry a step's raw output (default: only its result).
    expose_output: bool = False

    def step_vars(self, step: Literal["prepare", "execute", "complete"]) -> dict[str, Any]:
        """The operator's variables of a step: workflow ``vars`` < the step's ``vars``. A
        caller's variables come on top and may not repeat any of these names
        (:func:`conveyor.automation.variables.check_caller_vars`)."""
        found = getattr(self.steps, step)
        return merge_vars(self.vars, found.vars if found else None)


@dataclass(frozen=True)
class RealtimeLimits:
    """``meta.realtime`` (a Conveyor extension): real-time steps one node runs at once."""

    per_node: int = DEFAULT_REALTIME_PER_NODE


@dataclass(frozen=True)
class RunLimits:
    """``meta.runs`` (a Conveyor extension): per workflow, at most ``max_unfinished`` batch runs
    queued or running; an unfinished run older than ``ttl`` seconds is ended as ``expired``."""

    max_unfinished: int = DEFAULT_MAX_UNFINISHED
    ttl: float = DEFAULT_RUN_TTL


@dataclass(frozen=True)
class Meta:
    enable: bool = False
    keyword: str = DEFAULT_KEYWORD
    cpu_average: CpuAverage = field(default_factory=CpuAverage)
    #: Where prepare files (``prepare_path``) are created; ``None``: ``/workflow`` when
    #: writable, else ``<state dir>/workflow``.
    work_dir: str | None = None
    realtime: RealtimeLimits = field(default_factory=RealtimeLimits)
    runs: RunLimits = field(default_factory=RunLimits)


@dataclass(frozen=True)
class AutomationSettings:
    """The validated automation section. ``warnings`` lists accepted-but-suspicious values
    (a ``reactive`` replaced by the 2/3 rule, a playbook file not found)."""

    meta: Meta = field(default_factory=Meta)
    workflows: tuple[Workflow, ...] = ()
    warnings: tuple[str, ...] = ()
    #: The directory relative playbook paths are resolved against (the settings file's).
    base_dir: str | None = None

    def workflow(self, name: str) -> Workflow:
        """The workflow called ``name``; ``KeyError`` if there is none."""
        for wf in self.workflows:
            if wf.name == name:
                return wf
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(wf.name for wf in self.workflows)


def merge_vars(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge variable layers, later layers winning (workflow < step < request); ``None`` is
    an empty layer. Shallow: a nested object is replaced, not merged, as Ansible extra vars are.

    >>> merge_vars({"a": 1, "b": 1}, None, {"b": 2})
    {'a': 1, 'b': 2}
    """
    out: dict[str, Any] = {}
    for layer in layers:
        if layer:
            out.update(layer)
    return out
