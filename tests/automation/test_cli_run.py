"""``conveyor automation run/status/nodes`` through click's CliRunner and one real subprocess,
on a real Redis with a real node process doing the work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from support import PYTHON, python_env, wait_for
from support.automation import write_http_settings

from conveyor.cli import main


def _cli(redis_url: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["--redis-url", redis_url, "automation", *args])


@pytest.fixture
def settings_file(tmp_path: Path, r: redis.Redis) -> Path:
    return write_http_settings(tmp_path)


def test_run_needs_settings_and_well_formed_vars(redis_url: str, settings_file: Path) -> None:
    missing = _cli(redis_url, "run", "open")
    assert missing.exit_code == 2 and "--settings" in missing.output
    for bad, words in (("novalue", "has no '='"), ("1x=2", "bad variable name"), ("a=1", "twice")):
        extra = ["--vars", "a=0"] if bad == "a=1" else []
        result = _cli(redis_url, "run", "open", "-s", str(settings_file), *extra, "--vars", bad)
        assert result.exit_code == 2, result.output
        assert words in result.output


def test_run_starts_a_run_with_vars_and_step_switches(redis_url: str, settings_file: Path) -> None:
    result = _cli(
        redis_url,
        "run",
        "open",
        "-s",
        str(settings_file),
        "--vars",
        "path=/a=b;c",
        "--vars",
        "k=v",
        "--no-complete",
        "--json",
    )
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    assert run["workflow"] == "open" and run["source"] == "cli"
    assert run["request"] == {"path": "/a=b;c", "k": "v"}
    assert run["prepare"] is True and run["complete"] is False

    text = _cli(redis_url, "status", run["id"])
    assert text.exit_code == 0, text.output
    assert f"run: {run['id']}" in text.output and "workflow: open" in text.output
    listed = _cli(redis_url, "status", "--workflow", "open", "--json")
    assert [r["id"] for r in json.loads(listed.output)] == [run["id"]]
    table = _cli(redis_url, "status")
    assert run["id"] in table.output


def test_operators_may_run_closed_workflows_but_not_unknown_or_disabled(
    redis_url: str, settings_file: Path
) -> None:
    closed = _cli(redis_url, "run", "closed", "-s", str(settings_file))
    assert closed.exit_code == 0, closed.output  # allowApiExecution is for HTTP clients
    for name in ("nope", "off"):
        result = _cli(redis_url, "run", name, "-s", str(settings_file))
        assert result.exit_code == 1
        assert f"no enabled workflow named '{name}'" in result.output


def test_status_of_unknown_run_and_no_nodes(redis_url: str, settings_file: Path) -> None:
    unknown = _cli(redis_url, "status", "00ff")
    assert unknown.exit_code == 1 and "no run '00ff'" in unknown.output
    assert _cli(redis_url, "nodes").output.strip() == "no automation nodes"
    assert _cli(redis_url, "status").output.strip() == "no runs"


def test_watch_a_batch_run_on_a_node_in_process_and_in_a_subprocess(
    tmp_path: Path, redis_url: str, settings_file: Path, processes: Any
) -> None:
    node = processes(
        "-m",
        "conveyor.cli",
        "--redis-url",
        redis_url,
        "automation",
        "node",
        str(settings_file),
        "--term",
        "5",
        "--threads",
        "3",
        CONVEYOR_HEARTBEAT_INTERVAL="0.5",
    )
    watched = _cli(redis_url, "run", "batch", "-s", str(settings_file), "--watch", "--poll", "0.1")
    assert watched.exit_code == 0, watched.output
    assert "state: done" in watched.output
    assert "tasks: 3/3 ended, 3 ok, 0 failed" in watched.output
    assert "_src_size_total=" in watched.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["_request_total"] == 3 and report["_complete_total"] == 3

    # The real command line, as an operator types it, with the settings from the environment.
    proc = subprocess.run(
        [
            PYTHON,
            "-m",
            "conveyor.cli",
            "--redis-url",
            redis_url,
            "automation",
            "run",
            "batch",
            "--no-prepare",
            "--vars",
            "file=x/y=z",
            "--watch",
            "--json",
        ],
        env=python_env(CONVEYOR_AUTOMATION_SETTINGS=str(settings_file)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["state"] == "done" and run["total"] == 1 and run["succeeded"] == 1
    assert run["src_size_total"] == len("x/y=z")

    # The node publishes its counters with its heartbeat: wait for the one after the run.
    nodes = wait_for(
        lambda: (
            found
            if (found := json.loads(_cli(redis_url, "nodes", "--json").output))
            and found[0]["tasks_run"] == 4
            else None
        ),
        15,
        "the node's counters after the run",
    )
    assert [n["pid"] for n in nodes] == [node.pid]

    table = _cli(redis_url, "nodes").output
    assert "accepting" in table and "batch" in table
