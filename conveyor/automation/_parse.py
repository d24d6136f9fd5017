"""Walking the ``functions.backend.automation`` section into the dataclasses of
:mod:`conveyor.automation._model`: each function checks its part with a
:class:`~conveyor.automation._check.Checker` (which collects every problem) and builds the part.
"""

from __future__ import annotations

from typing import Any, Literal

from conveyor.automation._check import (
    SECTION,
    Checker,
    JsonObject,
    effective_reactive,
    or_default,
)
from conveyor.automation._model import (
    DEFAULT_COMPLETE_TIMEOUT,
    DEFAULT_CPU_INTERVAL,
    DEFAULT_CPU_WINDOW,
    DEFAULT_DEACTIVE,
    DEFAULT_EXECUTE_TIMEOUT,
    DEFAULT_KEYWORD,
    DEFAULT_MAX_UNFINISHED,
    DEFAULT_MIN_DWELL,
    DEFAULT_REACTIVE,
    DEFAULT_REALTIME_PER_NODE,
    DEFAULT_RUN_TTL,
    MODES,
    CompleteStep,
    CpuAverage,
    CpuThrottling,
    EndpointRef,
    ExecuteStep,
    LeaderElection,
    LeaderType,
    Meta,
    Playbook,
    PrepareStep,
    RealtimeLimits,
    RunLimits,
    Steps,
    Throttling,
    Workflow,
)


def parse_section(check: Checker, data: Any) -> JsonObject | None:
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


def parse_meta(check: Checker, section: JsonObject) -> Meta:
    """``meta``: the switch, the keyword and the Conveyor extensions (CPU basis, work dir,
    limits)."""
    path = f"{SECTION}.meta"
    known = ("enable", "keyword", "cpuAverage", "workDir", "realtime", "runs")
    obj = check.obj(path, section.get("meta"), known)
    if obj is None:
        return Meta()
    keyword = check.name(f"{path}.keyword", or_default(obj, "keyword", DEFAULT_KEYWORD))
    work_dir = obj.get("workDir")
    if work_dir is not None and (not isinstance(work_dir, str) or not work_dir.startswith("/")):
        check.problem(f"{path}.workDir", "must be an absolute directory path or null", work_dir)
        work_dir = None
    return Meta(
        enable=check.boolean(f"{path}.enable", or_default(obj, "enable", False)),
        keyword=keyword or DEFAULT_KEYWORD,
        cpu_average=_cpu_average(check, f"{path}.cpuAverage", obj.get("cpuAverage")),
        work_dir=work_dir,
        realtime=_realtime(check, f"{path}.realtime", obj.get("realtime")),
        runs=_runs(check, f"{path}.runs", obj.get("runs")),
    )


def _cpu_average(check: Checker, path: str, raw: Any) -> CpuAverage:
    avg = check.obj(path, raw, ("interval", "window", "alpha", "minDwell"))
    if avg is None:
        return CpuAverage()
    interval = check.positive(f"{path}.interval", or_default(avg, "interval", DEFAULT_CPU_INTERVAL))
    window = check.positive(f"{path}.window", or_default(avg, "window", DEFAULT_CPU_WINDOW))
    dwell = check.number(f"{path}.minDwell", or_default(avg, "minDwell", DEFAULT_MIN_DWELL))
    if dwell is not None and dwell < 0:
        check.problem(f"{path}.minDwell", "must be 0 or more seconds", dwell)
        dwell = None
    alpha: float | None = None
    if avg.get("alpha") is not None:
        alpha = check.number(f"{path}.alpha", avg["alpha"])
        if alpha is not None and not 0 < alpha <= 1:
            check.problem(f"{path}.alpha", "must be in (0, 1]", alpha)
            alpha = None
    return CpuAverage(
        interval or DEFAULT_CPU_INTERVAL,
        window or DEFAULT_CPU_WINDOW,
        alpha,
        DEFAULT_MIN_DWELL if dwell is None else dwell,
    )


def _realtime(check: Checker, path: str, raw: Any) -> RealtimeLimits:
    obj = check.obj(path, raw, ("perNode",))
    if obj is None:
        return RealtimeLimits()
    per_node = check.count(f"{path}.perNode", or_default(obj, "perNode", DEFAULT_REALTIME_PER_NODE))
    return RealtimeLimits(per_node=per_node or DEFAULT_REALTIME_PER_NODE)


def _runs(check: Checker, path: str, raw: Any) -> RunLimits:
    obj = check.obj(path, raw, ("maxUnfinished", "ttl"))
    if obj is None:
        return RunLimits()
    cap = check.count(
        f"{path}.maxUnfinished", or_default(obj, "maxUnfinished", DEFAULT_MAX_UNFINISHED)
    )
    ttl = check.positive(f"{path}.ttl", or_default(obj, "ttl", DEFAULT_RUN_TTL))
    return RunLimits(max_unfinished=cap or DEFAULT_MAX_UNFINISHED, ttl=ttl or DEFAULT_RUN_TTL)


def parse_workflows(check: Checker, section: JsonObject) -> list[Workflow]:
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
    "mode",
    "exposeOutput",
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
    expose = check.boolean(f"{path}.exposeOutput", or_default(obj, "exposeOutput", False))
    mode = or_default(obj, "mode", "batch")
    if mode not in MODES:
        check.problem(f"{path}.mode", 'must be "batch" or "realtime"', mode)
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
        mode="realtime" if mode == "realtime" else "batch",
        expose_output=expose,
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
            f"{_fmt(reactive)} is above deactive ({_fmt(deactive)}), outside 0-100 or 0 (a "
            f"throttled node would never resume); using 2/3 of deactive: {_fmt(effective)}",
        )
    return Throttling(enable=enable, cpu=CpuThrottling(deactive=deactive, reactive=effective))


def _fmt(x: float) -> str:
    return f"{x:g}" if x == round(x, 4) else f"{x:.4f}"
