"""The workflow engine in one process: a real Redis, a real file lease, a real worker running
the task jobs, real ``python:`` steps in child processes (tests/apps/automation/steps.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from support import python_env, running_worker, wait_for
from support.automation import load, write_settings

from conveyor import App, Settings
from conveyor.automation.engine import Automation
from conveyor.automation.lease import Leadership, open_lease
from conveyor.automation.settings import LeaderElection, Workflow
from conveyor.clock import FakeClock
from conveyor.errors import AutomationUnavailableError, WorkflowForbidden, WorkflowNotFound


@pytest.fixture
def node(
    tmp_path: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Automation]:
    # The python: steps run in child processes that import tests/apps/automation.
    monkeypatch.setenv("PYTHONPATH", python_env()["PYTHONPATH"])
    settings_file = write_settings(tmp_path, redis_url)
    app = App(
        Settings(
            redis_url=redis_url,
            concurrency=3,
            heartbeat_interval=0.5,
            liveness_ttl=2.0,
            recovery_interval=0.5,
            queues=(("automation.batch", 1), ("automation-rt.batch", 5)),
        )
    )
    automation = Automation(app, load(settings_file), node="solo", term=2.0)
    automation.install()
    yield automation
    automation.close()
    app.close()


def test_batch_run_prepare_execute_complete_with_totals(node: Automation, r: redis.Redis) -> None:
    with running_worker(node.app):
        run = node.start_run("batch", request_vars={"count": "4"}, source="cli")
        assert run.state == "preparing"
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
    done = node.run_status(run.id)
    assert done is not None
    assert (done.state, done.total, done.succeeded, done.failed) == ("done", 4, 4, 0)
    assert (done.src_size_total, done.dest_size_total) == (40, 36)
    assert done.master == "solo" and done.fence >= 1 and done.tasks_fence == done.fence
    completes = [json.loads(x) for x in r.lrange("side:completes", 0, -1)]
    assert len(completes) == 1
    assert completes[0]["_request_total"] == 4
    assert completes[0]["_complte_total"] == completes[0]["_complete_total"] == 4
    assert completes[0]["_fail_total"] == 0
    assert (completes[0]["_src_size_total"], completes[0]["_dest_size_total"]) == (40, 36)
    results = node.task_results(run.id)
    assert sorted(results) == [0, 1, 2, 3]
    assert {res["vars"]["path"] for res in results.values()} == {f"/tmp/a=b/{i}" for i in range(4)}
    assert all(res["node"] == "solo" and res["ok"] for res in results.values())
    assert all("src_size=10" in res["log"] for res in results.values())
    assert [x.id for x in node.runs("batch")] == [run.id]


def test_failed_tasks_are_counted_and_reported(node: Automation, r: redis.Redis) -> None:
    with running_worker(node.app):
        run = node.start_run("batch", request_vars={"count": "5", "fail_every": "2"}, source="cli")
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
    done = node.run_status(run.id)
    assert done is not None
    assert (done.state, done.succeeded, done.failed) == ("done", 2, 3)
    summary = json.loads(r.lrange("side:completes", 0, -1)[0])
    assert (summary["_complete_total"], summary["_fail_total"]) == (2, 3)
    failed = [res for res in node.task_results(run.id).values() if not res["ok"]]
    assert {res["vars"]["i"] for res in failed} == {"0", "2", "4"}
    assert all("fails on purpose" in res["error"] for res in failed)


def test_prepare_off_runs_the_request_as_one_task(node: Automation, r: redis.Redis) -> None:
    with running_worker(node.app):
        run = node.start_run(
            "batch", request_vars={"i": "x", "size": "7"}, prepare=False, source="api"
        )
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
    done = node.run_status(run.id)
    assert done is not None
    assert (done.total, done.succeeded, done.src_size_total) == (1, 1, 7)
    assert r.llen("side:prepares") == 0
    assert r.hgetall("side:completions") == {"x": "1"}


def test_execute_off_runs_prepare_and_complete_only(node: Automation, r: redis.Redis) -> None:
    with running_worker(node.app):
        run = node.start_run("batch", request_vars={"count": "2"}, execute=False, source="cli")
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
    done = node.run_status(run.id)
    assert done is not None and not done.execute
    assert (done.state, done.total, done.succeeded) == ("done", 0, 0)
    assert r.llen("side:prepares") == 1 and r.hlen("side:completions") == 0
    assert json.loads(r.lrange("side:completes", 0, -1)[0])["_request_total"] == 0


def test_real_time_task_runs_on_a_node_worker(node: Automation, r: redis.Redis) -> None:
    with pytest.raises(AutomationUnavailableError, match="no automation node runs"):
        node.run_task("batch", request_vars={"i": "rt"})  # no heartbeat yet: no node
    with running_worker(node.app):
        wait_for(node.nodes, timeout=10)
        result = node.run_task("batch", request_vars={"i": "rt", "size": "5"})
    assert result.ok and result.facts == {"src_size": 5, "dest_size": 4}
    assert result.node == "solo" and result.run_id is None
    assert "real-time task" in result.log
    assert result.as_dict()["vars"] == {"i": "rt", "size": "5"}
    assert r.hget("side:completions", "rt") == "1"
    # The slot is free again and the answer was consumed.
    assert r.zcard(node.app.store.keys.automation_realtime) == 0


def test_unknown_disabled_and_forbidden_workflows(node: Automation) -> None:
    with pytest.raises(WorkflowNotFound, match="'nope'"):
        node.start_run("nope")
    closed_settings = replace(
        node.settings,
        workflows=tuple(replace(wf, allow_api_execution=False) for wf in node.settings.workflows),
    )
    closed = Automation(node.app, closed_settings)
    with pytest.raises(WorkflowForbidden, match="allowApiExecution"):
        closed.start_run("batch", source="api")
    with pytest.raises(WorkflowForbidden):
        closed.run_task("batch", source="api")
    assert closed.workflow("batch", source="cli").name == "batch", "the CLI is trusted"
    disabled = Automation(
        node.app, replace(node.settings, meta=replace(node.settings.meta, enable=False))
    )
    with pytest.raises(WorkflowNotFound):
        disabled.start_run("batch", source="cli")
    assert disabled.queues == ()


def test_prepare_schedule_makes_one_run_per_cron_tick_across_nodes(
    tmp_path: Path, redis_url: str, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two nodes tick with an injected clock over 4.5 minutes of a once-a-minute schedule:
    whichever is master creates the run of each tick, exactly once; the first tick seen is only
    the baseline. (Prepare itself is not run here: the runs are only counted.)"""
    settings = load(write_settings(tmp_path, redis_url, schedule="* * * * *"))
    start = 1_700_000_000.0
    clock = FakeClock(start - start % 60 + 30)  # half past a minute
    app = App(Settings(redis_url=redis_url))

    def leadership(name: str) -> Callable[[Workflow], Leadership]:
        def make(workflow: Workflow) -> Leadership:
            election = LeaderElection(path=f"{tmp_path}/leases/")
            return Leadership(open_lease(election, workflow.name, clock=clock), name, term=30,
                              clock=clock)  # fmt: skip

        return make

    nodes = [
        Automation(app, settings, node=name, clock=clock, term=30, leadership=leadership(name))
        for name in ("a", "b")
    ]
    for automation in nodes:
        monkeypatch.setattr(automation.master, "_spawn", lambda *args: None)
    for step in range(10):
        for automation in nodes if step % 3 else reversed(nodes):
            automation.master.tick()
        clock.advance(30)
    runs = nodes[0].runs("batch")
    assert len(runs) == 4, [(run.source, run.created_at - start) for run in runs]
    assert {run.source for run in runs} == {"schedule"}
    assert {run.master for run in runs} <= {"a", "b"}
    app.close()


def test_a_task_parked_as_interrupted_counts_as_failed_and_the_run_completes(
    node: Automation, r: redis.Redis
) -> None:
    app = node.app
    queue = node.queue("batch")
    app.gate_queue(queue, lambda: False)  # hold the tasks in Redis for now
    with running_worker(app):
        run = node.start_run("batch", request_vars={"count": "2"}, source="cli")
        wait_for(lambda: r.llen(f"queue:{queue}") == 2, timeout=30)
        # One task's workers died holding it, again and again: the sweep parks it.
        task = json.loads(r.rpop(f"queue:{queue}") or "")
        task["interrupted_count"] = app.settings.max_retries_after_interruption
        keys = app.store.keys
        r.sadd(keys.working_registry, "host:9:dead")
        r.lpush(keys.working("host:9:dead"), json.dumps(task))
        wait_for(lambda: r.zcard(keys.interrupted) == 1, timeout=30)
        app.gate_queue(queue, lambda: True)
        wait_for(lambda: (s := node.run_status(run.id)) is not None and s.finished, timeout=30)
    done = node.run_status(run.id)
    assert done is not None
    assert (done.state, done.succeeded, done.failed) == ("done", 1, 1)
    parked = node.task_results(run.id)[task["args"][2]]
    assert not parked["ok"] and "interrupted" in parked["error"]
    assert len(r.lrange("side:completes", 0, -1)) == 1
