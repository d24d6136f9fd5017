"""Automation across machines (issue #16), with real ``conveyor automation node`` processes on
one Redis. Each node gets its own HOME and state directory, standing for a machine of its own;
every effect is counted by the steps themselves (tests/apps/automation/steps.py, ``side:*``).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from support import PYTHON, StartProcess, python_env, wait_for
from support.automation import (
    cli_node,
    finished,
    master_node,
    node_info,
    observer_engine,
    wait_for_value,
    write_settings,
)

from conveyor import App, Settings
from conveyor.automation.engine import Automation
from conveyor.cli import main
from conveyor.redis.embedded import stop_server

pytestmark = [pytest.mark.slow]

#: The manual's example: a file lease with no path.
MANUAL_LEASE = {"type": "file", "path": None, "authEndpoint": None}


@pytest.fixture
def observers(redis_url: str) -> Iterator[list[Automation]]:
    made: list[Automation] = []
    yield made
    for obs in made:
        obs.app.close()


def machine(tmp_path: Path, name: str) -> tuple[Path, list[str], dict[str, str]]:
    """A machine's HOME, its global options (own state dir) and environment."""
    home = tmp_path / f"home-{name}"
    home.mkdir()
    return home, ["--state-dir", str(home / "state")], {"HOME": str(home)}


def prepares_and_completes(r: redis.Redis) -> tuple[list[int], list[int]]:
    prepares = [int(x.split(":")[0]) for x in r.lrange("side:prepares", 0, -1)]
    completes = [json.loads(x)["pid"] for x in r.lrange("side:completes", 0, -1)]
    return prepares, completes


@pytest.mark.timeout(240)
def test_two_machines_with_the_manuals_null_path_have_one_master(
    tmp_path: Path,
    redis_url: str,
    r: redis.Redis,
    processes: StartProcess,
    observers: list[Automation],
) -> None:
    """``"path": null`` used to put the lease in each machine's state dir: both nodes were
    master with fence 1 and prepare and complete ran twice per run. Now the lease is the one
    every node sharing the Redis sees."""
    settings = write_settings(tmp_path, redis_url, leader=MANUAL_LEASE)
    nodes = {}
    for name in ("m1", "m2"):
        _, global_args, env = machine(tmp_path, name)
        # A 10 s term: on a loaded machine a 2 s one can lapse mid-prepare, and a master change
        # legitimately prepares the run again (at least once); this test is about one master.
        nodes[name] = cli_node(processes, settings, name, "--redis-url", redis_url, *global_args,
                               term=10, **env)  # fmt: skip
    obs = observer_engine(redis_url, settings)
    observers.append(obs)
    wait_for(lambda: len(obs.nodes()) == 2 and master_node(obs, "batch"), timeout=60)
    for _ in range(3):
        run = obs.start_run("batch", request_vars={"count": "4"}, source="cli")
        done = wait_for_value(lambda run=run: finished(obs, run.id), timeout=90)
        assert (done.state, done.total, done.succeeded) == ("done", 4, 4), done
        assert done.complete_claims == 1
    prepares, completes = prepares_and_completes(r)
    pids = {proc.pid for proc in nodes.values()}
    assert len(prepares) == 3 and set(prepares) <= pids, "prepare ran once per run"
    assert len(completes) == 3 and set(completes) <= pids, "complete ran once per run"
    assert obs.store.metrics("batch").get("master_conflicts", 0) == 0
    for proc in nodes.values():
        proc.send_signal(signal.SIGTERM)
    for proc in nodes.values():
        assert proc.wait(30) == 0


@pytest.mark.timeout(240)
def test_a_node_finding_another_master_with_its_fence_refuses_to_act(
    tmp_path: Path,
    redis_url: str,
    r: redis.Redis,
    processes: StartProcess,
    observers: list[Automation],
) -> None:
    """Each machine's settings point the file lease at its own local disk (the mistake a
    local path makes): both leases hand out fence 1. The second node to act finds the first
    one's mark in Redis, refuses, and says why; each run still prepares and completes once."""
    nodes = {}
    for name in ("m1", "m2"):
        home, global_args, env = machine(tmp_path, name)
        (home / "leases").mkdir()
        own = {"type": "file", "path": f"{home}/leases/"}
        settings = write_settings(tmp_path, redis_url, leader=own, name=f"settings-{name}.json")
        nodes[name] = cli_node(processes, settings, name, "--redis-url", redis_url, *global_args,
                               term=10, **env)  # fmt: skip
    obs = observer_engine(redis_url, settings)
    observers.append(obs)

    def conflict() -> str | None:
        for n in obs.nodes():
            fault = n.faults.get("batch")
            if fault and "same fence" in str(fault.get("error")):
                return n.id
        return None

    loser = wait_for_value(conflict, timeout=60)
    winner = wait_for_value(lambda: master_node(obs, "batch"), timeout=30)
    assert winner.id != loser
    assert "batch" not in (node_info(obs, loser) or winner).masters
    for _ in range(3):
        run = obs.start_run("batch", request_vars={"count": "2"}, source="cli")
        done = wait_for_value(lambda run=run: finished(obs, run.id), timeout=90)
        assert (done.state, done.succeeded) == ("done", 2), done
    prepares, completes = prepares_and_completes(r)
    # Once per run, by the node whose mark holds the fence.
    assert len(prepares) == 3 and len(completes) == 3
    assert set(prepares) == set(completes) == {nodes[winner.id].pid}
    assert obs.store.metrics("batch")["master_conflicts"] >= 1


@pytest.mark.timeout(240)
def test_a_workflow_with_an_unreachable_lease_does_not_block_the_next(
    tmp_path: Path,
    redis_url: str,
    r: redis.Redis,
    processes: StartProcess,
    observers: list[Automation],
) -> None:
    broken = {
        "name": "broken",
        "steps": {
            "prepare": {
                "playbook": "python:apps.automation.steps:prepare",
                "leaderElection": {"type": "file", "path": f"{tmp_path}/not-mounted/leases/"},
            },
            "execute": {"playbook": "python:apps.automation.steps:execute"},
        },
    }
    settings = write_settings(tmp_path, redis_url, leader=MANUAL_LEASE, before=[broken])
    node = cli_node(processes, settings, "n1", "--redis-url", redis_url)
    obs = observer_engine(redis_url, settings)
    observers.append(obs)
    run = obs.start_run("batch", request_vars={"count": "2"}, source="cli")
    done = wait_for_value(lambda: finished(obs, run.id), timeout=90)
    assert (done.state, done.succeeded) == ("done", 2), done

    def fault() -> dict[str, object] | None:
        info = node_info(obs, "n1")
        return None if info is None else info.faults.get("broken")

    first = wait_for_value(fault, timeout=30)
    assert "not-mounted" in str(first["error"]) and "does not exist" in str(first["error"])
    assert "batch" not in (node_info(obs, "n1") or done).faults  # type: ignore[union-attr]
    # Retried with backoff (1, 2, 4, 8 s ...), not every tick (10 ticks a second).
    time.sleep(8)
    later = fault()
    assert later is not None
    assert 2 <= int(str(later["attempts"])) - int(str(first["attempts"])) <= 4, (first, later)
    # Reported by `conveyor automation status`.
    result = CliRunner().invoke(
        main, ["--redis-url", redis_url, "automation", "status", "-s", str(settings)]
    )
    assert result.exit_code == 0, result.output
    assert "fault: broken on n1: LeaseError: lease directory" in result.output
    node.send_signal(signal.SIGTERM)
    assert node.wait(30) == 0


@pytest.mark.timeout(240)
def test_global_options_reach_the_node_and_run_watch(
    tmp_path: Path, processes: StartProcess
) -> None:
    """``conveyor --prefix P --state-dir X automation node`` and ``... automation run --watch``
    with the same options meet on the embedded Redis under X, under the prefix P."""
    state = tempfile.mkdtemp(prefix="cv-")  # a Unix socket path must stay short
    steps = tmp_path / "ga_steps.py"
    steps.write_text(
        "def plan(v):\n"
        "    with open(v['prepare_path'], 'w') as f:\n"
        "        for n in (1, 2):\n"
        "            f.write(f'/automation/workflows/ga/vars/n={n}\\n')\n"
        "def work(v):\n    return {'src_size': int(v['n']), 'dest_size': int(v['n'])}\n"
    )  # fmt: skip
    document = {"functions": {"backend": {"automation": {
        "meta": {"enable": True},
        "workflows": [{"name": "ga", "throttling": {"enable": False}, "steps": {
            "prepare": {"playbook": "python:ga_steps:plan"},
            "execute": {"playbook": "python:ga_steps:work"}}}]}}}}  # fmt: skip
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(document))
    flags = ["--prefix", "teamA", "--state-dir", state]
    env = python_env()
    env.pop("CONVEYOR_REDIS_URL", None)
    try:
        node = cli_node(processes, settings, "ga-node", *flags)
        watched = subprocess.run(
            [PYTHON, "-m", "conveyor.cli", *flags, "automation", "run", "ga", "-s",
             str(settings), "--watch", "--timeout", "120", "--json"],
            env=env, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert watched.returncode == 0, watched.stderr
        run = json.loads(watched.stdout)
        assert (run["state"], run["total"], run["succeeded"]) == ("done", 2, 2)
        assert run["src_size_total"] == 3
        prefixed = App(Settings(state_dir=state, key_prefix="teamA"))
        plain = App(Settings(state_dir=state))
        assert prefixed.store.client.exists(prefixed.store.keys.automation_run(run["id"]))
        assert not plain.store.client.exists(plain.store.keys.automation_run(run["id"]))
        prefixed.close()
        plain.close()
        node.send_signal(signal.SIGTERM)
        assert node.wait(30) == 0
    finally:
        stop_server(state)
        shutil.rmtree(state, ignore_errors=True)


def test_run_watch_says_why_nothing_moves_and_gives_up_after_timeout(
    tmp_path: Path, redis_url: str, r: redis.Redis
) -> None:
    settings = write_settings(tmp_path, redis_url, leader=MANUAL_LEASE)
    started = time.monotonic()
    watched = subprocess.run(
        [PYTHON, "-m", "conveyor.cli", "--redis-url", redis_url, "automation", "run", "batch",
         "-s", str(settings), "--watch", "--timeout", "3"],
        env=python_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert watched.returncode == 3, (watched.stdout, watched.stderr)
    assert "no automation node runs 'batch'" in watched.stderr
    assert "none listens on automation.batch" in watched.stderr
    assert "gave up waiting after 3s" in watched.stderr
    assert time.monotonic() - started < 30
