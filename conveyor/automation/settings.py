"""The ``functions.backend.automation`` section of the settings JSON file, loaded into frozen
dataclasses and validated in one pass.

Every problem is collected with the JSON path of the bad field and the whole list is raised as
one :class:`~conveyor.errors.AutomationSettingsError`, so one run shows everything to fix.
Unknown fields inside the automation section are refused (a typo such as
``allowAPIExecution`` would otherwise silently leave a workflow closed), with a suggestion
when a known field is close. Fields outside the section belong to other functions and are
ignored, except the ``endpoints`` of the function an ``authEndpoint`` names.

The file is found the manual's way (:func:`settings_path`): ``--settings``, else
``CONVEYOR_AUTOMATION_SETTINGS``, else ``/usr/local/m2/setting.json``.

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
from pathlib import Path
from typing import Any

from conveyor.automation._check import Checker
from conveyor.automation._model import (
    DEFAULT_COMPLETE_TIMEOUT,
    DEFAULT_CPU_INTERVAL,
    DEFAULT_CPU_WINDOW,
    DEFAULT_DEACTIVE,
    DEFAULT_EXECUTE_TIMEOUT,
    DEFAULT_KEYWORD,
    DEFAULT_REACTIVE,
    MODES,
    AutomationSettings,
    CompleteStep,
    CpuAverage,
    CpuThrottling,
    EndpointRef,
    ExecuteStep,
    LeaderElection,
    LeaderType,
    Meta,
    Mode,
    Playbook,
    PrepareStep,
    RealtimeLimits,
    RunLimits,
    Steps,
    Throttling,
    Workflow,
    merge_vars,
)
from conveyor.automation._parse import parse_meta, parse_section, parse_workflows
from conveyor.errors import AutomationSettingsError

__all__ = [
    "DEFAULT_COMPLETE_TIMEOUT",
    "DEFAULT_CPU_INTERVAL",
    "DEFAULT_CPU_WINDOW",
    "DEFAULT_DEACTIVE",
    "DEFAULT_EXECUTE_TIMEOUT",
    "DEFAULT_KEYWORD",
    "DEFAULT_REACTIVE",
    "DEFAULT_SETTINGS_FILE",
    "MODES",
    "SETTINGS_ENV",
    "AutomationSettings",
    "CompleteStep",
    "CpuAverage",
    "CpuThrottling",
    "EndpointRef",
    "ExecuteStep",
    "LeaderElection",
    "LeaderType",
    "Meta",
    "Mode",
    "Playbook",
    "PrepareStep",
    "RealtimeLimits",
    "RunLimits",
    "Steps",
    "Throttling",
    "Workflow",
    "load_automation_settings",
    "merge_vars",
    "parse_automation_settings",
    "settings_path",
]

#: The manual's settings file (seed 004), read by the node, the CLI and the web app alike.
DEFAULT_SETTINGS_FILE = "/usr/local/m2/setting.json"
#: Names another settings file (the ``--settings`` options win over it).
SETTINGS_ENV = "CONVEYOR_AUTOMATION_SETTINGS"


def settings_path(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """The settings file to read and where that choice came from: ``explicit`` (a
    ``--settings`` option), else ``$CONVEYOR_AUTOMATION_SETTINGS``, else the manual's
    ``/usr/local/m2/setting.json``.

    >>> settings_path(None, {})
    ('/usr/local/m2/setting.json', 'the default')
    >>> settings_path("s.json", {SETTINGS_ENV: "other.json"})
    ('s.json', '--settings')
    """
    env = os.environ if environ is None else environ
    if explicit:
        return os.fspath(explicit), "--settings"
    if env.get(SETTINGS_ENV):
        return env[SETTINGS_ENV], SETTINGS_ENV
    return DEFAULT_SETTINGS_FILE, "the default"


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
    except (ValueError, RecursionError) as exc:
        raise AutomationSettingsError([f"not valid JSON: {exc}"], source=str(path)) from None
    return parse_automation_settings(data, base_dir=path.resolve().parent, source=str(path))


def parse_automation_settings(
    data: Any, *, base_dir: str | os.PathLike[str] | None = None, source: str = ""
) -> AutomationSettings:
    """Validate the parsed settings document ``data`` (the whole file, not just the section)."""
    check = Checker(data, base_dir)
    section = parse_section(check, data)
    if section is None:
        raise AutomationSettingsError(check.problems, source=source)
    meta = parse_meta(check, section)
    workflows = parse_workflows(check, section)
    if check.problems:
        raise AutomationSettingsError(check.problems, source=source)
    return AutomationSettings(
        meta=meta,
        workflows=tuple(workflows),
        warnings=tuple(check.warnings),
        base_dir=None if base_dir is None else str(base_dir),
    )
