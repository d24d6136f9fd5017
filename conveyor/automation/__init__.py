"""Automation workflows (layer 4): settings, throttling, the URL grammar, and (in submodules)
the variable rules (``variables``), leader election (``lease``), the step runner (``runner``)
and the workflow engine (``engine``: ``master``, ``batch``, ``node``, ``realtime``,
``workflow_metrics``; the node process in ``process``).

This package exports the pure foundation: the validated ``functions.backend.automation``
settings, the operator's variable layers, the CPU throttle and the HTTP URL grammar.

>>> from conveyor.automation import merge_vars
>>> merge_vars({"a": 1}, {"a": 2}, None)
{'a': 2}
"""

from conveyor.automation.settings import (
    AutomationSettings,
    CompleteStep,
    CpuAverage,
    CpuThrottling,
    EndpointRef,
    ExecuteStep,
    LeaderElection,
    Meta,
    Playbook,
    PrepareStep,
    Steps,
    Throttling,
    Workflow,
    load_automation_settings,
    merge_vars,
    parse_automation_settings,
)
from conveyor.automation.throttle import (
    Ewma,
    Throttle,
    ThrottleState,
    alpha_for,
    psutil_cpu_source,
    resolve_thresholds,
)
from conveyor.automation.urls import (
    WorkflowRequest,
    format_workflow_path,
    parse_task_line,
    parse_workflow_path,
)
from conveyor.errors import AutomationSettingsError, WorkflowUrlError

__all__ = [
    "AutomationSettings",
    "AutomationSettingsError",
    "CompleteStep",
    "CpuAverage",
    "CpuThrottling",
    "EndpointRef",
    "Ewma",
    "ExecuteStep",
    "LeaderElection",
    "Meta",
    "Playbook",
    "PrepareStep",
    "Steps",
    "Throttle",
    "ThrottleState",
    "Throttling",
    "Workflow",
    "WorkflowRequest",
    "WorkflowUrlError",
    "alpha_for",
    "format_workflow_path",
    "load_automation_settings",
    "merge_vars",
    "parse_automation_settings",
    "parse_task_line",
    "parse_workflow_path",
    "psutil_cpu_source",
    "resolve_thresholds",
]
