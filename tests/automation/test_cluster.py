"""Three real node processes on one Redis and one lease directory (SPEC AUTO-8, AUTO-9):
batch runs with ``python:`` steps and with the real ``ansible-playbook``, a SIGKILLed master,
a SIGSTOPped master, and CPU throttling against a real busy loop.

Terms are 2 s here (5 minutes in production). Every effect a step has is recorded by the step
itself (tests/apps/automation/steps.py, ``side:*`` keys), so the tests count what really ran.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support import ROOT, StartProcess, wait_for
from support.automation import NODE_ENV, load, write_settings

from conveyor import App, Settings
from conveyor.automation.engine import Automation
from conveyor.automation.runs import NodeInfo, RunInfo

pytestmark = [pytest.mark.slow]

TERM = "2"
EXAMPLE = ROOT / "examples" / "automation"


@pytest.fixture
def observer(redis_url: str, r: redis.Redis) -> Iterator[Callable[[Path], Automation]]:
    """An Automation that is not a node (like the web app): starts runs, reads status."""
    apps: list[App] = []

    def make(settings_file: Path) -> Automation:
        app = App(Settings(redis_url=redis_url))
        apps.append(app)
        return Automation(app, load(settings_file), node="observer")

    yield make
    for app in apps:
        app.close()


def cli_node(processes: StartProcess, redis_url: str, settings: Path, name: str) -> Any:
    """A node started the production way: ``conveyor automation node``."""
    return processes(
        "-m", "conveyor.cli", "automation", "node", str(settings),
        "--redis", redis_url, "--threads", "2", "--term", TERM, "--node", name,
        CONVEYOR_REDIS_URL=redis_url, **NODE_ENV,
    )  # fmt: skip


def app_node(processes: StartProcess, redis_url: str, settings: Path, name: str, **env: str) -> Any:
    """A node with test-only injections (tests/apps/automation/node_app.py)."""
    return processes(
        "-m", "apps.automation.node_app", str(settings), name, TERM,
        CONVEYOR_REDIS_URL=redis_url, **NODE_ENV, **env,
    )  # fmt: skip


def node(obs: Automation, name: str) -> NodeInfo | None:
    return next((n for n in obs.nodes() if n.id == name), None)


def master_of(obs: Automation, workflow: str, among: set[str] | None = None) -> NodeInfo | None:
    """The live node claiming to be master of ``workflow`` (within ``among``)."""
    now = time.time()
    for info in obs.nodes():
        if among is not None and info.id not in among:
            continue
        if workflow in info.masters and now - info.last_seen < 2:
            return info
    return None


def finished(obs: Automation, run_id: str) -> RunInfo | None:
    run = obs.run_status(run_id)
    return run if run is not None and run.finished else None


def completes(r: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(x) for x in r.lrange("side:completes", 0, -1)]


def _ansible_workflow(tmp_path: Path) -> tuple[dict[str, Any], Path, Path, Path]:
    src, dest, report = tmp_path / "src", tmp_path / "dest", tmp_path / "report.json"
    src.mkdir()
    for i, size in enumerate((100, 2000, 30)):
        (src / f"img-{i}.jpg").write_bytes(b"x" * size)
    workflow = {
        "name": "migrate_tmpimg",
        "vars": {"src_dir": str(src), "dest_dir": str(dest)},
        "steps": {
            "prepare": {
                "playbook": str(EXAMPLE / "workflows" / "prepare_file_to_migrate.yml"),
                "leaderElection": {"type": "file", "path": f"{tmp_path / 'leases'}/"},
            },
            "execute": {"playbook": str(EXAMPLE / "playbooks" / "file_migration.yml")},
            "complete": {
                "playbook": str(EXAMPLE / "playbooks" / "callback_api.yml"),
                "vars": {"report_path": str(report)},
            },
        },
        "throttling": {"enable": False},
    }
    return workflow, src, dest, report


@pytest.mark.timeout(150)
def test_three_nodes_ansible_run_then_sigkill_the_master_mid_run(
    tmp_path: Path,
    redis_url: str,
    r: redis.Redis,
    processes: StartProcess,
    observer: Callable[[Path], Automation],
) -> None:
    settings = write_settings(tmp_path, redis_url)
    document = json.loads(settings.read_text())
    ansible_wf, src, dest, report = _ansible_workflow(tmp_path)
    document["functions"]["backend"]["automation"]["workflows"].append(ansible_wf)
    settings.write_text(json.dumps(document))
    obs = observer(settings)
    procs = {name: cli_node(processes, redis_url, settings, name) for name in ("n1", "n2", "n3")}
    wait_for(lambda: len(obs.nodes()) == 3 and master_of(obs, "batch"), timeout=40)

    # 1. One batch run with the real ansible-playbook: prepare lists src, execute moves a file.
    run = obs.start_run("migrate_tmpimg", source="cli")
    done = wait_for_value(lambda: finished(obs, run.id), timeout=90)
    assert (done.state, done.total, done.succeeded, done.failed) == ("done", 3, 3, 0), done
    assert (done.src_size_total, done.dest_size_total) == (2130, 2130)
    assert sorted(p.name for p in dest.iterdir()) == ["img-0.jpg", "img-1.jpg", "img-2.jpg"]
    assert not list(src.iterdir())
    written = json.loads(report.read_text())
    totals = [int(written[k]) for k in ("request_total", "complete_total", "fail_total")]
    assert totals == [3, 3, 0]
    assert int(written["src_size_total"]) == 2130

    # 2. A python-step run; SIGKILL its master once a few tasks have ended.
    master = master_of(obs, "batch")
    assert master is not None
    old_fence = master.masters["batch"]
    run = obs.start_run("batch", request_vars={"count": "12", "sleep": "0.8"}, source="cli")
    wait_for(lambda: len(obs.task_results(run.id)) >= 2, timeout=40)
    victim = procs[master.id]
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    victim.wait(10)
    assert not finished(obs, run.id), "the run must still be executing when the master dies"
    survivors = set(procs) - {master.id}

    done = wait_for_value(lambda: finished(obs, run.id), timeout=60)
    assert (done.state, done.total, done.succeeded, done.failed) == ("done", 12, 12, 0), done
    assert (done.src_size_total, done.dest_size_total) == (120, 108)
    assert done.master in survivors and done.fence > old_fence, "a new master took the run over"
    results = obs.task_results(run.id)
    assert sorted(results) == list(range(12)), "every task recorded once"
    after = {res["node"] for res in results.values() if res["ended_at"] > killed_at}
    assert after and after <= survivors, f"work after the kill ran on the survivors: {after}"
    # Tasks the victim had started but not recorded ran again on a survivor, counted once.
    started_on_victim = {
        int(i) for i, pid, _ in (x.split(":") for x in r.lrange("side:starts", 0, -1))
        if int(pid) == victim.pid
    }  # fmt: skip
    interrupted = {i for i in started_on_victim if results[i]["node"] != master.id}
    assert all(results[i]["node"] in survivors for i in interrupted)
    ran = r.hgetall("side:completions")
    assert set(ran) == {str(i) for i in range(12)}, "every task really ran"
    # Complete ran exactly once, on the new master, with the right summary.
    assert len(completes(r)) == 1
    summary = completes(r)[0]
    assert summary["pid"] == procs[done.master].pid
    assert (summary["_request_total"], summary["_complete_total"], summary["_fail_total"]) == (
        12, 12, 0,
    )  # fmt: skip
    assert summary["_complte_total"] == 12
    assert (summary["_src_size_total"], summary["_dest_size_total"]) == (120, 108)
    assert done.complete_claims == 1
    prepares = r.lrange("side:prepares", 0, -1)
    assert [int(p.split(":")[0]) for p in prepares] == [victim.pid], "prepare ran on the master"
    for name in survivors:
        procs[name].send_signal(signal.SIGTERM)
    for name in survivors:
        assert procs[name].wait(30) == 0


def wait_for_value(get: Callable[[], Any], timeout: float) -> Any:
    box: list[Any] = []

    def check() -> bool:
        value = get()
        if value:
            box.append(value)
        return bool(value)

    wait_for(check, timeout=timeout, interval=0.1)
    return box[-1]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("naive", [False, True], ids=["proper-master", "naive-master"])
def test_sigstopped_master_wakes_up_and_cannot_act(
    naive: bool,
    *,
    tmp_path: Path,
    redis_url: str,
    r: redis.Redis,
    processes: StartProcess,
    observer: Callable[[Path], Automation],
) -> None:
    """The master is stopped in the middle of its prepare step, past its term. Another node is
    elected, re-runs prepare and finishes the run. When the old master resumes, its prepare
    returns and it would publish: a proper master sees its term is gone and stands down; a
    naive master (trusting its old term) tries, and Redis refuses the stale fence. Either way
    the run record does not change."""
    settings = write_settings(tmp_path, redis_url)
    obs = observer(settings)
    env = {"NAIVE_MASTER": "1"} if naive else {}
    old = app_node(processes, redis_url, settings, "old", **env)
    wait_for(lambda: master_of(obs, "batch", {"old"}), timeout=30)
    others = {name: cli_node(processes, redis_url, settings, name) for name in ("b", "c")}
    wait_for(lambda: len(obs.nodes()) == 3, timeout=30)

    run = obs.start_run(
        "batch", request_vars={"count": "6", "sleep": "0.2", "prepare_sleep": "1.5"}, source="cli"
    )
    wait_for(lambda: r.llen("side:prepares") == 1, timeout=30)
    old.send_signal(signal.SIGSTOP)
    try:
        new = wait_for_value(lambda: master_of(obs, "batch", set(others)), timeout=30)
        done = wait_for_value(lambda: finished(obs, run.id), timeout=60)
        assert (done.state, done.succeeded, done.master) == ("done", 6, new.id)
        key = obs.app.store.keys.automation_run(run.id)
        before = r.hgetall(key)
        results_before = obs.task_results(run.id)
        rejected_before = obs.rejected_writes("batch")
    finally:
        old.send_signal(signal.SIGCONT)

    def stats() -> dict[str, int]:
        info = obs.store.client.hget(obs.app.store.keys.automation_nodes, "old")
        return json.loads(info)["master_stats"] if info else {}

    if naive:
        wait_for(lambda: obs.rejected_writes("batch") > rejected_before, timeout=30)
    else:
        wait_for(lambda: stats().get("stood_down", 0) >= 1, timeout=30)
        time.sleep(1.0)  # room for a write it should not make
        assert obs.rejected_writes("batch") == rejected_before == 0, "it did not even try"
    assert stats().get("publishes", 0) == 0
    assert r.hgetall(key) == before, "the run record is unchanged"
    assert obs.task_results(run.id) == results_before
    assert r.llen("queue:automation.batch") == 0, "no task of the stale master was enqueued"
    assert len(completes(r)) == 1
    old.send_signal(signal.SIGTERM)
    assert old.wait(30) == 0


@pytest.mark.timeout(120)
def test_throttled_node_stops_taking_tasks_and_resumes_without_flapping(
    tmp_path: Path,
    redis_url: str,
    r: redis.Redis,
    processes: StartProcess,
    observer: Callable[[Path], Automation],
) -> None:
    settings = write_settings(
        tmp_path,
        redis_url,
        throttling={"enable": True, "cpu": {"deactive": 30, "reactive": 10}},
        cpu_average={"interval": 0.25, "window": 1.0},
    )
    obs = observer(settings)
    pidfile = tmp_path / "burner.pids"
    pidfile.write_text("")
    proc = app_node(processes, redis_url, settings, "t1", BURNER_PIDFILE=str(pidfile))
    wait_for(lambda: master_of(obs, "batch", {"t1"}), timeout=30)
    info = node(obs, "t1")
    assert info is not None and not info.throttled and info.transitions == 0

    burner = processes("-c", "while True: pass")
    pidfile.write_text(str(burner.pid))
    try:
        wait_for(lambda: (n := node(obs, "t1")) is not None and n.throttled, timeout=30)
        run = obs.start_run("batch", request_vars={"i": "t"}, prepare=False, source="cli")
        wait_for(lambda: obs.run_status(run.id).state == "executing", timeout=30)  # type: ignore[union-attr]
        # A fetch already waiting when the gate closed may take it: it is handed back at once.
        wait_for(lambda: r.llen("queue:automation.batch") == 1, timeout=10)
        # Bounded: for 3 s the task waits in Redis while the burner runs.
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            assert r.llen("queue:automation.batch") == 1
            assert not r.hexists("side:completions", "t")
            time.sleep(0.2)
        held = node(obs, "t1")
        assert held is not None and held.throttled and held.transitions == 1
        assert held.cpu_average is not None and held.cpu_average >= 10
    finally:
        burner.kill()
        burner.wait(10)
    done = wait_for_value(lambda: finished(obs, run.id), timeout=30)
    assert (done.state, done.succeeded) == ("done", 1)
    after = node(obs, "t1")
    assert after is not None and not after.throttled
    assert after.transitions == 2, f"throttled once and resumed once, no flapping: {after}"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
