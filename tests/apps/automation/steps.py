"""``python:`` steps for the engine tests. Each runs in a child process of a node (the runner's
``conveyor.automation._call``) and records what really happened in Redis under ``side:*`` keys,
so tests count real effects instead of trusting the engine's own counters.

Variables used: ``redis_url`` (workflow vars), ``count`` and ``prepare_sleep`` (prepare),
``i`` (the task), ``sleep`` (execute), ``size`` (execute: reported as src_size; dest_size is
``size - 1``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis


def node_pid() -> int:
    """The node running this step (the step's parent is the node's reaper, not the node)."""
    return int(os.environ["CONVEYOR_STEP_OWNER"].split(":")[0])


def _side(variables: dict[str, Any]) -> redis.Redis:
    return redis.Redis.from_url(variables["redis_url"], decode_responses=True)


def prepare(variables: dict[str, Any]) -> None:
    """Write ``count`` task lines into ``prepare_path`` (after ``prepare_sleep`` seconds)."""
    side = _side(variables)
    side.rpush("side:prepares", f"{node_pid()}:{time.time()}")
    side.rpush("side:prepare_paths", variables["prepare_path"])
    time.sleep(float(variables.get("prepare_sleep", 0)))
    name = variables["workflow_name"]
    with open(variables["prepare_path"], "w", encoding="utf-8") as f:
        for i in range(int(variables.get("count", 3))):
            f.write(f"example.com/automation/workflows/{name}/vars/i={i};path=/tmp/a=b/{i}\n")


def execute(variables: dict[str, Any]) -> dict[str, Any]:
    """Record a start, sleep, record a completion; report sizes."""
    side = _side(variables)
    i = variables["i"]
    side.rpush("side:starts", f"{i}:{node_pid()}:{time.time()}")
    time.sleep(float(variables.get("sleep", 0)))
    side.hincrby("side:completions", str(i), 1)
    size = int(variables.get("size", 10))
    if variables.get("fail_every") and int(i) % int(variables["fail_every"]) == 0:
        # No caller value in the message: the engine would redact it ("task [redacted] ...").
        raise RuntimeError("this task fails on purpose")
    return {"src_size": size, "dest_size": size - 1}


def complete(variables: dict[str, Any]) -> None:
    """Record the summary variables the complete step received."""
    summary = {k: v for k, v in variables.items() if k.startswith("_")}
    _side(variables).rpush("side:completes", json.dumps({"pid": node_pid(), **summary}))


def record(variables: dict[str, Any]) -> None:
    """Record the caller's variables (everything but the operator's redis_url)."""
    seen = {k: v for k, v in variables.items() if k != "redis_url"}
    _side(variables).rpush("side:records", json.dumps(seen))


def linger(variables: dict[str, Any]) -> None:
    """Start a grandchild that sleeps 30 s (``marker`` on its command line), then sleep 30 s."""
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", variables["marker"]])
    _side(variables).rpush("side:lingering", str(os.getpid()))
    time.sleep(30)
