"""Fencing and once-only rules of the run records, straight against the Lua scripts on a real
Redis (conveyor/redis/automation.py): what a stale master may not write, what a redelivered
task may not count twice, and who may claim and finish the complete step."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from conveyor import App, Settings
from conveyor.redis.automation import AutomationStore

WF = "wf"


@pytest.fixture
def store(redis_url: str, r: redis.Redis) -> Iterator[AutomationStore]:
    app = App(Settings(redis_url=redis_url))
    yield AutomationStore(app.store)
    app.close()


def new_run(store: AutomationStore, run_id: str = "run1") -> str:
    outcome = store.create_run(
        run_id, WF, request={"a": "1"}, prepare=True, complete=True, source="cli", now=100.0
    )
    assert outcome == "created"
    return run_id


def publish(store: AutomationStore, run_id: str, fence: int, n: int = 2) -> tuple[str, str]:
    payloads = [json.dumps({"class": "x", "args": [i], "jid": f"j{i}"}) for i in range(n)]
    return store.publish(run_id, WF, fence=fence, queue="automation.wf", payloads=payloads, now=1)


def record(store: AutomationStore, run_id: str, index: int, fence: int, ok: bool = True) -> str:
    return store.record(
        run_id, WF, index=index, fence=fence, ok=ok, src_size=10, dest_size=9, result={"i": index}
    ).outcome


def test_a_stale_master_cannot_publish_and_enqueues_nothing(
    store: AutomationStore, r: redis.Redis
) -> None:
    run = new_run(store)
    assert store.adopt(run, WF, 1, "old") == ("adopted", "preparing")
    assert store.adopt(run, WF, 2, "new") == ("adopted", "preparing")
    before = r.hgetall(f"conveyor:automation:run:{run}")
    assert publish(store, run, 1) == ("stale", "")
    assert store.adopt(run, WF, 1, "old")[0] == "stale"
    assert r.hgetall(f"conveyor:automation:run:{run}") == before
    assert r.llen("queue:automation.wf") == 0
    assert store.rejected(WF) == 2
    assert publish(store, run, 2) == ("published", "executing")
    assert r.llen("queue:automation.wf") == 2
    assert publish(store, run, 2) == ("state", "executing"), "published once"
    assert r.llen("queue:automation.wf") == 2


def test_results_count_once_per_task_and_only_under_the_published_fence(
    store: AutomationStore,
) -> None:
    run = new_run(store)
    store.adopt(run, WF, 3, "m")
    publish(store, run, 3, n=2)
    assert store.task_start(run, WF, 0, 3, "n1") == "run"
    assert store.task_start(run, WF, 0, 2, "n1") == "stale"
    assert record(store, run, 0, 2) == "stale", "a task handed out under another term"
    assert record(store, run, 0, 3) == "recorded"
    assert record(store, run, 0, 3, ok=False) == "duplicate", "a redelivered task"
    assert store.task_start(run, WF, 0, 3, "n2") == "recorded"
    # A newer master adopting the run keeps the healthy nodes' results of its task list.
    store.adopt(run, WF, 4, "m2")
    assert record(store, run, 1, 3, ok=False) == "last"
    info = store.get(run)
    assert info is not None
    assert (info["succeeded"], info["failed"], info["src_size_total"]) == ("1", "1", "20")
    assert info["state"] == "completing"


def test_complete_is_claimed_once_and_taken_over_only_by_a_newer_master(
    store: AutomationStore,
) -> None:
    run = new_run(store)
    store.adopt(run, WF, 1, "a")
    assert store.claim_complete(run, WF, 1, 5.0) == ("state", "preparing"), "tasks not ended"
    publish(store, run, 1, n=1)
    record(store, run, 0, 1)
    assert store.claim_complete(run, WF, 1, 5.0) == ("claimed", "completing")
    assert store.claim_complete(run, WF, 1, 5.0) == ("held", "completing")
    # Master a dies inside the complete step; b adopts the run and takes the claim over.
    store.adopt(run, WF, 2, "b")
    assert store.claim_complete(run, WF, 1, 6.0) == ("stale", "")
    assert store.finish(run, WF, fence=1, state="done", now=7.0, summary={})[0] == "stale"
    assert store.claim_complete(run, WF, 2, 6.0) == ("taken-over", "completing")
    assert store.finish(run, WF, fence=2, state="done", now=7.0, summary={"x": 1}) == (
        "finished",
        "done",
    )
    assert store.claim_complete(run, WF, 2, 8.0) == ("state", "done")
    assert store.finish(run, WF, fence=2, state="failed", now=9.0, summary={})[0] == "state"
    info = store.get(run)
    assert info is not None
    assert (info["state"], info["complete_claims"], json.loads(info["summary"])) == (
        "done",
        "2",
        {"x": 1},
    )
    assert store.active(WF) == []


def test_scheduled_runs_claim_each_cron_tick_once(store: AutomationStore) -> None:
    def create(run_id: str, tick: float, fence: int = 1) -> str:
        return store.create_run(
            run_id, WF, request={}, prepare=True, complete=True, source="schedule",
            now=tick + 1, fence=fence, cron_tick=tick,
        )  # fmt: skip

    assert create("r0", 60.0) == "baseline", "the first tick seen only sets the baseline"
    assert create("r1", 60.0) == "claimed"
    assert create("r2", 120.0) == "created"
    assert create("r3", 120.0) == "claimed"
    assert store.adopt("r2", WF, 5, "m")[0] == "adopted"
    assert create("r4", 180.0, fence=4) == "stale"
    assert store.run_ids(WF) == ["r2"]
