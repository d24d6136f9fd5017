"""The ``functions.backend.automation`` section of the settings JSON file, loaded into frozen
dataclasses and validated in one pass.

Every problem is collected with the JSON path of the bad field and the whole list is raised as
one :class:`~conveyor.errors.AutomationSettingsError`, so one run shows everything to fix.
Unknown fields inside the automation section are refused (a typo such as
``allowAPIExecution`` would otherwise silently leave a workflow closed), with a suggestion
when a known field is close. Fields outside the section belong to other functions and are
ignored, except the ``endpoints`` of the function an ``authEndpoint`` names.

>>> s = parse_automation_settings({"functions": {"backend": {"automation": {
...     "meta": {"enable": True},
...     "workflows": [{"name": "w", "steps": {"execute": {"playbook": "run.yml"}}}]}}}})
>>> s.workflow("w").steps.execute.timeout
180.0
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conveyor.automation._check import (
    SECTION,
    Checker,
    JsonObject,
    effective_reactive,
    or_default,
    parse_playbook,
)
from conveyor.errors import AutomationSettingsError

DEFAULT_KEYWORD = "automation"
DEFAULT_EXECUTE_TIMEOUT = 180.0
DEFAULT_COMPLETE_TIMEOUT = 60.0
DEFAULT_DEACTIVE = 60.0
DEFAULT_REACTIVE = 40.0
DEFAULT_CPU_INTERVAL = 1.0
DEFAULT_CPU_WINDOW = 10.0

LeaderType = Literal["file", "aws-s3", "redis"]


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
    #: ``None``: the engine picks a local default (one machine only). For ``redis`` the path
    #: names the lease key (default: the workflow name).
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

    def step_vars(
        self,
        step: Literal["prepare", "execute", "complete"],
        request: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The variables a step's playbook receives: workflow < step < request."""
        found = getattr(self.steps, step)
        return merge_vars(self.vars, found.vars if found else None, request)


@dataclass(frozen=True)
class Meta:
    enable: bool = False
    keyword: str = DEFAULT_KEYWORD
    cpu_average: CpuAverage = field(default_factory=CpuAverage)


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


def load_automation_settings(file: str | os.PathLike[str]) -> AutomationSettings:
    """Read and validate the settings JSON file at ``file``.

    Raises :class:`AutomationSettingsError` listing every problem (an unreadable file or
    invalid JSON is one problem).
    """
    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutomationSettingsError([f"cannot read the file: {exc}"], source=str(path)) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AutomationSettingsError([f"not valid JSON: {exc}"], source=str(path)) from None
    return parse_automation_settings(data, base_dir=path.resolve().parent, source=str(path))


def parse_automation_settings(
    data: Any, *, base_dir: str | os.PathLike[str] | None = None, source: str = ""
) -> AutomationSettings:
    """Validate the parsed settings document ``data`` (the whole file, not just the section)."""
    check = Checker(data, base_dir)
    section = _section(check, data)
    if section is None:
        raise AutomationSettingsError(check.problems, source=source)
    meta = _meta(check, section)
    workflows = _workflows(check, section)
    if check.problems:
        raise AutomationSettingsError(check.problems, source=source)
    return AutomationSettings(
        meta=meta,
        workflows=tuple(workflows),
        warnings=tuple(check.warnings),
        base_dir=None if base_dir is None else str(base_dir),
    )


def _section(check: Checker, data: Any) -> JsonObject | None:
    node: Any = data
    path = ""
    for key in SECTION.split("."):
        if not isinstance(node, dict):
            check.problem(path or "(document)", "must be a JSON object", node)
            return None
        path = f"{path}.{key}" if path else key
        if key not in node:
            check.problem(path, "missing; the automation settings live here")
            return None
        node = node[key]
    if not isinstance(node, dict):
        check.problem(SECTION, "must be a JSON object", node)
        return None
    check.only(SECTION, node, ("meta", "workflows"))
    return node


def _meta(check: Checker, section: JsonObject) -> Meta:
    path = f"{SECTION}.meta"
    obj = check.obj(path, section.get("meta"), ("enable", "keyword", "cpuAverage"))
    if obj is None:
        return Meta()
    keyword = check.name(f"{path}.keyword", or_default(obj, "keyword", DEFAULT_KEYWORD))
    avg_path = f"{path}.cpuAverage"
    avg = check.obj(avg_path, obj.get("cpuAverage"), ("interval", "window", "alpha"))
    cpu_average = CpuAverage()
    if avg is not None:
        interval = check.positive(
            f"{avg_path}.interval", or_default(avg, "interval", DEFAULT_CPU_INTERVAL)
        )
        window = check.positive(f"{avg_path}.window", or_default(avg, "window", DEFAULT_CPU_WINDOW))
        alpha: float | None = None
        if avg.get("alpha") is not None:
            alpha = check.number(f"{avg_path}.alpha", avg["alpha"])
            if alpha is not None and not 0 < alpha <= 1:
                check.problem(f"{avg_path}.alpha", "must be in (0, 1]", alpha)
                alpha = None
        cpu_average = CpuAverage(
            interval or DEFAULT_CPU_INTERVAL, window or DEFAULT_CPU_WINDOW, alpha
        )
    return Meta(
        enable=check.boolean(f"{path}.enable", or_default(obj, "enable", False)),
        keyword=keyword or DEFAULT_KEYWORD,
        cpu_average=cpu_average,
    )


def _workflows(check: Checker, section: JsonObject) -> list[Workflow]:
    path = f"{SECTION}.workflows"
    raw = section.get("workflows")
    if raw is None:
        return []
    if not isinstance(raw, list):
        check.problem(path, "must be a JSON array of workflow objects", raw)
        return []
    out: list[Workflow] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in seen:
            check.problem(
                f"{path}[{i}].name",
                f"duplicates the name of workflows[{seen[name]}]; names must be unique",
                name,
            )
        elif isinstance(name, str):
            seen[name] = i
        wf = _workflow(check, f"{path}[{i}]", item)
        if wf is not None:
            out.append(wf)
    return out


_WORKFLOW_FIELDS = (
    "name",
    "description",
    "enable",
    "allowApiExecution",
    "vars",
    "steps",
    "throttling",
)


def _workflow(check: Checker, path: str, item: Any) -> Workflow | None:
    before = len(check.problems)
    obj = check.obj(path, item, _WORKFLOW_FIELDS, required=True)
    if obj is None:
        return None
    if "name" not in obj:
        check.problem(f"{path}.name", "missing; every workflow needs a name")
    name = check.name(f"{path}.name", obj.get("name"))
    description = obj.get("description")
    if description is not None and not isinstance(description, str):
        check.problem(f"{path}.description", "must be a string", description)
    steps = _steps(check, f"{path}.steps", obj.get("steps"))
    workflow_vars = check.vars(f"{path}.vars", obj.get("vars"))
    throttling = _throttling(check, f"{path}.throttling", obj.get("throttling"))
    enable = check.boolean(f"{path}.enable", or_default(obj, "enable", True))
    allow = check.boolean(f"{path}.allowApiExecution", or_default(obj, "allowApiExecution", False))
    if len(check.problems) > before or name is None or steps is None:
        return None
    return Workflow(
        name=name,
        steps=steps,
        description=description if isinstance(description, str) else "",
        enable=enable,
        allow_api_execution=allow,
        vars=workflow_vars,
        throttling=throttling,
    )


def _steps(check: Checker, path: str, raw: Any) -> Steps | None:
    obj = check.obj(path, raw, ("prepare", "execute", "complete"), required=True)
    if obj is None:
        return None
    if obj.get("execute") is None:
        check.problem(f"{path}.execute", "missing; a workflow needs an execute step")
    execute = _run_step(check, f"{path}.execute", obj.get("execute"), "execute")
    complete = _run_step(check, f"{path}.complete", obj.get("complete"), "complete")
    prepare = _prepare(check, f"{path}.prepare", obj.get("prepare"))
    if not isinstance(execute, ExecuteStep):
        return None
    return Steps(
        execute=execute,
        prepare=prepare,
        complete=complete if isinstance(complete, CompleteStep) else None,
    )


def _run_step(
    check: Checker,
    path: str,
    raw: Any,
    kind: Literal["execute", "complete"],
) -> ExecuteStep | CompleteStep | None:
    obj = check.obj(path, raw, ("playbook", "timeout", "vars"))
    if obj is None:
        return None
    playbook = check.playbook(f"{path}.playbook", obj.get("playbook"))
    default = DEFAULT_EXECUTE_TIMEOUT if kind == "execute" else DEFAULT_COMPLETE_TIMEOUT
    timeout = check.positive(f"{path}.timeout", or_default(obj, "timeout", default))
    step_vars = check.vars(f"{path}.vars", obj.get("vars"))
    if playbook is None or timeout is None:
        return None
    cls = ExecuteStep if kind == "execute" else CompleteStep
    return cls(playbook=Playbook.parse(playbook), timeout=timeout, vars=step_vars)


def _prepare(check: Checker, path: str, raw: Any) -> PrepareStep | None:
    obj = check.obj(path, raw, ("schedule", "playbook", "vars", "leaderElection"))
    if obj is None:
        return None
    playbook = check.playbook(f"{path}.playbook", obj.get("playbook"))
    schedule = check.schedule(f"{path}.schedule", obj.get("schedule"))
    step_vars = check.vars(f"{path}.vars", obj.get("vars"))
    leader = _leader(check, f"{path}.leaderElection", obj.get("leaderElection"))
    if playbook is None or leader is None:
        return None
    return PrepareStep(
        playbook=Playbook.parse(playbook),
        schedule=schedule,
        vars=step_vars,
        leader_election=leader,
    )


def _leader(check: Checker, path: str, raw: Any) -> LeaderElection | None:
    before = len(check.problems)
    obj = check.obj(path, raw, ("type", "path", "authEndpoint"))
    if obj is None:
        return None if len(check.problems) > before else LeaderElection()
    kind: LeaderType = "file"
    raw_kind = obj.get("type")
    if raw_kind in ("aws-s3", "redis"):
        kind = raw_kind
    elif raw_kind not in (None, "file"):
        check.problem(f"{path}.type", 'must be "file", "aws-s3" or "redis"', raw_kind)
    lease = obj.get("path")
    if lease is not None and (not isinstance(lease, str) or not lease.strip()):
        check.problem(f"{path}.path", "must be a non-empty string or null", lease)
    if kind == "aws-s3" and lease is None:
        check.problem(f"{path}.path", 'is required for "aws-s3" (the lease object key)')
    endpoint = check.endpoint(f"{path}.authEndpoint", obj.get("authEndpoint"))
    if kind == "aws-s3" and obj.get("authEndpoint") is None:
        check.problem(
            f"{path}.authEndpoint",
            'is required for "aws-s3"; name an endpoint, e.g. "mystorage@aws_s3"',
        )
    if endpoint is not None and kind == "aws-s3" and endpoint[1] != "aws_s3":
        check.problem(
            f"{path}.authEndpoint",
            'must name an "aws_s3" endpoint for "aws-s3"',
            obj["authEndpoint"],
        )
    if len(check.problems) > before:
        return None
    ref = None if endpoint is None else EndpointRef(*endpoint)
    return LeaderElection(type=kind, path=lease, auth_endpoint=ref)


def _throttling(check: Checker, path: str, raw: Any) -> Throttling:
    obj = check.obj(path, raw, ("enable", "cpu"))
    if obj is None:
        return Throttling()
    enable = check.boolean(f"{path}.enable", or_default(obj, "enable", True))
    cpu = check.obj(f"{path}.cpu", obj.get("cpu"), ("deactive", "reactive"))
    if cpu is None:
        return Throttling(enable=enable)
    deactive = check.number(f"{path}.cpu.deactive", or_default(cpu, "deactive", DEFAULT_DEACTIVE))
    reactive = check.number(f"{path}.cpu.reactive", or_default(cpu, "reactive", DEFAULT_REACTIVE))
    if deactive is not None and not 0 <= deactive <= 100:
        check.problem(f"{path}.cpu.deactive", "must be between 0 and 100", cpu["deactive"])
        deactive = None
    if deactive is None or reactive is None:
        return Throttling(enable=enable)
    effective = effective_reactive(deactive, reactive)
    if effective != reactive:
        check.warn(
            f"{path}.cpu.reactive",
            f"{_fmt(reactive)} is above deactive ({_fmt(deactive)}) or outside 0-100; "
            f"using 2/3 of deactive: {_fmt(effective)}",
        )
    return Throttling(enable=enable, cpu=CpuThrottling(deactive=deactive, reactive=effective))


def _fmt(x: float) -> str:
    return f"{x:g}" if x == round(x, 4) else f"{x:.4f}"
