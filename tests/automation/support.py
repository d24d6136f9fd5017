"""Shared helpers of the workflow engine tests: settings files and run waits."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conveyor.automation import AutomationSettings, load_automation_settings
from conveyor.automation.lease import Lease, Term

STEPS = "python:automation_apps.steps"


def write_settings(
    tmp_path: Path,
    redis_url: str,
    *,
    workflow: str = "batch",
    throttling: dict[str, Any] | None = None,
    cpu_average: dict[str, Any] | None = None,
    complete: bool = True,
    schedule: str | None = None,
    extra_vars: dict[str, Any] | None = None,
) -> Path:
    """A settings file with one workflow of ``python:`` steps and a file lease in tmp_path."""
    leases = tmp_path / "leases"
    leases.mkdir(exist_ok=True)
    steps: dict[str, Any] = {
        "prepare": {
            "schedule": schedule,
            "playbook": f"{STEPS}:prepare",
            "vars": {"count": 3},
            "leaderElection": {"type": "file", "path": f"{leases}/"},
        },
        "execute": {"playbook": f"{STEPS}:execute", "timeout": 30, "vars": {"size": 10}},
    }
    if complete:
        steps["complete"] = {"playbook": f"{STEPS}:complete", "timeout": 30}
    meta: dict[str, Any] = {"enable": True}
    if cpu_average:
        meta["cpuAverage"] = cpu_average
    document = {
        "functions": {
            "backend": {
                "automation": {
                    "meta": meta,
                    "workflows": [
                        {
                            "name": workflow,
                            "allowApiExecution": True,
                            "vars": {
                                "redis_url": redis_url,
                                "workflow_name": workflow,
                                **(extra_vars or {}),
                            },
                            "steps": steps,
                            "throttling": throttling or {"enable": False},
                        }
                    ],
                }
            }
        }
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(document))
    return path


def load(path: Path) -> AutomationSettings:
    return load_automation_settings(path)


#: Short core intervals for node processes: a killed or stopped node's jobs are recovered
#: within a few seconds.
NODE_ENV = {
    "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
    "CONVEYOR_LIVENESS_TTL": "2",
    "CONVEYOR_RECOVERY_INTERVAL": "0.5",
    "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.5",
    "CONVEYOR_SHUTDOWN_TIMEOUT": "3",
}


def race_acquire(handles: Sequence[Lease], ttl: float) -> list[Term | None]:
    """Every handle tries ``acquire`` at the same moment (one thread each, behind a barrier);
    what each one got, in handle order."""
    results: list[Term | None] = [None] * len(handles)
    start = threading.Barrier(len(handles))

    def run(i: int) -> None:
        start.wait()
        results[i] = handles[i].acquire(f"node-{i}", ttl)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results
