"""Shared helpers of the automation tests: settings files, run waits and a running node."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conveyor import App, Settings
from conveyor.automation import AutomationSettings, load_automation_settings
from conveyor.automation.engine import Automation
from conveyor.automation.lease import Lease, Term
from conveyor.automation.runs import NodeInfo, RunInfo
from conveyor.web.automation import SETTINGS_ENV
from support import StartProcess, python_env, wait_for

STEPS = "python:apps.automation.steps"


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
    leader: dict[str, Any] | None = None,
    before: list[dict[str, Any]] | None = None,
    name: str = "settings.json",
) -> Path:
    """A settings file with one workflow of ``python:`` steps and a file lease in tmp_path
    (``leader`` replaces that ``leaderElection``; ``before`` lists workflows put first)."""
    leases = tmp_path / "leases"
    leases.mkdir(exist_ok=True)
    steps: dict[str, Any] = {
        "prepare": {
            "schedule": schedule,
            "playbook": f"{STEPS}:prepare",
            "leaderElection": leader or {"type": "file", "path": f"{leases}/"},
        },
        # count (3) and size (10) default in the steps: requests may set them, operators don't.
        "execute": {"playbook": f"{STEPS}:execute", "timeout": 30},
    }
    if complete:
        steps["complete"] = {"playbook": f"{STEPS}:complete", "timeout": 30}
    # Prepare files in the test's directory, not under the default state dir in HOME.
    meta: dict[str, Any] = {"enable": True, "workDir": str(tmp_path / "work")}
    if cpu_average:
        meta["cpuAverage"] = cpu_average
    document = {
        "functions": {
            "backend": {
                "automation": {
                    "meta": meta,
                    "workflows": [
                        *(before or []),
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
                        },
                    ],
                }
            }
        }
    }
    path = tmp_path / name
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


# -- the HTTP API tests' workflows ---------------------------------------------------------------
HTTP_STEPS = textwrap.dedent(
    """\
    import json, time

    def echo(variables):
        return {"vars": variables}

    def sized(variables):
        n = len(variables.get("file", ""))
        return {"src_size": n, "dest_size": n}

    def slow(variables):
        time.sleep(30)

    def boom(variables):
        raise RuntimeError("boom " + variables.get("x", ""))

    def plan(variables):
        with open(variables["prepare_path"], "w") as f:
            for name in ("a/b=c", "d;e", "ü"):
                from urllib.parse import quote
                f.write("/automation/workflows/batch/vars/file=" + quote(name, safe="") + "\\n")

    def report(variables):
        summary = {k: v for k, v in variables.items() if k.startswith("_")}
        with open(variables["report_path"], "w") as f:
            json.dump(summary, f)
    """
)


def http_workflow(name: str, execute: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "allowApiExecution": True,
        "vars": {"wf": "w", "layer": "workflow"},
        "steps": {
            "execute": {"playbook": f"python:http_steps:{execute}", "vars": {"layer": "step"}}
        },
        "throttling": {"enable": False},
        **extra,
    }


def write_http_settings(tmp_path: Path, *, enable: bool = True) -> Path:
    """The HTTP API tests' settings: workflows open, slowpoke, broken, closed, off and batch of
    ``python:`` steps written to tmp_path/http_steps.py, a file lease in tmp_path."""
    (tmp_path / "http_steps.py").write_text(HTTP_STEPS)
    (tmp_path / "leases").mkdir(exist_ok=True)
    slow = http_workflow("slowpoke", "slow")
    slow["steps"]["execute"]["timeout"] = 1.5
    batch = http_workflow("batch", "sized")
    batch["vars"] = {"report_path": str(tmp_path / "report.json")}
    batch["steps"]["prepare"] = {
        "playbook": "python:http_steps:plan",
        "leaderElection": {"type": "file", "path": f"{tmp_path}/leases/"},
    }
    batch["steps"]["complete"] = {"playbook": "python:http_steps:report", "timeout": 30}
    document = {
        "functions": {
            "backend": {
                "automation": {
                    "meta": {"enable": enable, "workDir": str(tmp_path / "work")},
                    "workflows": [
                        http_workflow("open", "echo"),
                        slow,
                        http_workflow("broken", "boom"),
                        {**http_workflow("closed", "echo"), "allowApiExecution": False},
                        {**http_workflow("off", "echo"), "enable": False},
                        batch,
                    ],
                }
            }
        }
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(document))
    return path


# -- the dashboard's Workflows tests -------------------------------------------------------------
def write_web_settings(tmp_path: Path, redis_url: str) -> Path:
    """One workflow ``batch`` of python: steps, a file lease in tmp_path, fast CPU samples."""
    leases = tmp_path / "leases"
    leases.mkdir(exist_ok=True)
    workflow: dict[str, Any] = {
        "name": "batch",
        "allowApiExecution": True,
        "vars": {"redis_url": redis_url, "workflow_name": "batch"},
        "steps": {
            "prepare": {
                "playbook": f"{STEPS}:prepare",
                "leaderElection": {"type": "file", "path": f"{leases}/"},
            },
            "execute": {"playbook": f"{STEPS}:execute", "timeout": 30},
            "complete": {"playbook": f"{STEPS}:complete", "timeout": 30},
        },
        "throttling": {"enable": False},
    }
    meta = {
        "enable": True,
        "cpuAverage": {"interval": 0.3, "window": 3},
        "workDir": str(tmp_path / "work"),
    }
    document = {"functions": {"backend": {"automation": {"meta": meta, "workflows": [workflow]}}}}
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(document))
    return path


@contextmanager
def running_node(
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    node: str,
    queues: tuple[tuple[str, int], ...] = (("automation.batch", 1),),
) -> Iterator[Automation]:
    """An installed automation node over the ``batch`` workflow of :func:`write_web_settings`."""
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    app = App(
        Settings(
            redis_url=redis_url,
            concurrency=3,
            heartbeat_interval=0.5,
            liveness_ttl=2.0,
            recovery_interval=0.5,
            queues=queues,
        )
    )
    automation = Automation(
        app, load_automation_settings(write_web_settings(tmp_path, redis_url)), node=node, term=5.0
    )
    automation.install()
    try:
        yield automation
    finally:
        automation.close()
        app.close()


# -- watching real nodes ---------------------------------------------------------------------------
def observer_engine(redis_url: str, settings_file: Path) -> Automation:
    """An Automation that is no node (like the web app): starts runs, reads status. Close its
    app when done."""
    app = App(Settings(redis_url=redis_url))
    return Automation(app, load(settings_file), node="observer")


def node_info(obs: Automation, name: str) -> NodeInfo | None:
    return next((n for n in obs.nodes() if n.id == name), None)


def master_node(obs: Automation, workflow: str) -> NodeInfo | None:
    """The live node acting as master of ``workflow``."""
    now = time.time()
    return next((n for n in obs.nodes() if workflow in n.masters and now - n.last_seen < 3), None)


def finished(obs: Automation, run_id: str) -> RunInfo | None:
    run = obs.run_status(run_id)
    return run if run is not None and run.finished else None


def wait_for_value(get: Callable[[], Any], timeout: float) -> Any:
    """Poll ``get`` until it returns something truthy; that value."""
    box: list[Any] = []

    def check() -> bool:
        value = get()
        if value:
            box.append(value)
        return bool(value)

    wait_for(check, timeout=timeout, interval=0.1)
    return box[-1]


def cli_node(
    processes: StartProcess,
    settings: Path,
    name: str,
    *global_args: str,
    term: float = 2,
    **env: str,
) -> subprocess.Popen[bytes]:
    """``conveyor [global_args] automation node SETTINGS`` as a real process, with a short term
    (2 s) and short core intervals."""
    return processes(
        "-m", "conveyor.cli", *global_args, "automation", "node", str(settings),
        "--threads", "2", "--term", f"{term:g}", "--node", name, **NODE_ENV, **env,
    )  # fmt: skip
