"""Mixed-version tests (SPEC COMPAT-1, COMPAT-3, COMPAT-5): two releases of an app share one Redis;
payloads written by one declaration run on the other, for each change docs/compat.md documents.
Plus the ``deprecated`` and ``enqueue_as`` options themselves."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from apps.compat import rolling
from support import APPS, StartProcess, run_burst, wait_for

from conveyor import App, Job, Settings
from conveyor.api import Api
from conveyor.errors import ConfigurationError
from conveyor.features.flags import Flags
from conveyor.features.transitions import enqueue_as

Ran = list[tuple[str, Any]]


@pytest.fixture
def releases(settings: Settings) -> Iterator[tuple[App, App, Ran]]:
    """The previous release (``old``) and the new one, and what their jobs did."""
    old, new = App(settings), App(settings)
    ran: Ran = []
    yield old, new, ran
    old.close()
    new.close()


def retry_now(app: App) -> int:
    """Move every retrying job back to its queue (as an operator would)."""
    return Api(app).retries.retry_all()


def retrying(r: redis.Redis) -> int:
    return int(r.zcard("retry"))


def test_extra_optional_argument(releases: tuple[App, App, Ran], r: redis.Redis) -> None:
    old, new, ran = releases

    @old.job(name="ExampleWorker")
    class OldWorker(Job):
        def perform(self, object_id: int) -> None:
            ran.append(("old", [object_id]))

    @new.job(name="ExampleWorker")
    class NewWorker(Job):
        # Release M: the new argument has a default, producers do not pass it yet.
        def perform(self, object_id: int, new_arg: str | None = None) -> None:
            ran.append(("new", [object_id, new_arg]))

    OldWorker.perform_async(1)  # written by the old release, run by the new one
    run_burst(new)
    NewWorker.perform_async(2)  # written by the new release, run by the old one
    run_burst(old)
    assert ran == [("new", [1, None]), ("old", [2])]

    # Release M+1 passes it. Only M nodes may still run: they accept it.
    NewWorker.perform_async(3, "x")
    run_burst(new)
    assert ran[-1] == ("new", [3, "x"])
    # Why M+1 must wait for M everywhere: an M-1 node cannot run it, but it is retried, not lost.
    NewWorker.perform_async(4, "y")
    run_burst(old)
    assert retrying(r) == 1 and ran[-1] == ("new", [3, "x"])
    retry_now(new)
    run_burst(new)
    assert ran[-1] == ("new", [4, "y"]) and retrying(r) == 0


def test_parameter_hash(releases: tuple[App, App, Ran], r: redis.Redis) -> None:
    old, new, ran = releases

    @old.job(name="ExampleWorker")
    class OldWorker(Job):
        def perform(self, object_id: int, params: dict[str, Any] | None = None) -> None:
            p = params or {}
            ran.append(("old", {"id": object_id, "a": p.get("a")}))

    @new.job(name="ExampleWorker")
    class NewWorker(Job):
        def perform(self, object_id: int, params: dict[str, Any] | None = None) -> None:
            p = params or {}
            ran.append(("new", {"id": object_id, "a": p.get("a"), "b": p.get("b", "default")}))

    OldWorker.perform_async(1, {"a": 1})
    OldWorker.perform_async(2)
    run_burst(new)
    NewWorker.perform_async(3, {"a": 3, "b": "three"})  # a key the old release ignores
    run_burst(old)
    assert sorted(ran, key=lambda x: x[1]["id"]) == [
        ("new", {"id": 1, "a": 1, "b": "default"}),
        ("new", {"id": 2, "a": None, "b": "default"}),
        ("old", {"id": 3, "a": 3}),
    ]
    assert retrying(r) == 0


def test_rename_with_alias_and_the_producer_switch(
    releases: tuple[App, App, Ran], r: redis.Redis
) -> None:
    old, new, ran = releases

    @old.job(name="OldName")
    class OldWorker(Job):
        def perform(self, object_id: int) -> None:
            ran.append(("old", object_id))

    @new.job(
        name="NewName", aliases=("OldName",), enqueue_as=enqueue_as("OldName", flag="new_name")
    )
    class NewWorker(Job):
        def perform(self, object_id: int) -> None:
            ran.append(("new", object_id))

    # Release M, flag off: the new release still enqueues the old name, so old nodes run it.
    result = NewWorker.perform_async(1)
    assert Api(new).queue("default").jobs()[0].job_class == "OldName"
    run_burst(old)
    # Jobs written by the old release run on the new one through the alias.
    OldWorker.perform_async(2)
    run_burst(new)
    assert ran == [("old", 1), ("new", 2)] and result

    # Release M+1: every node runs M, the flag goes on and producers switch to the new name.
    Flags.of(new).enable("new_name")
    NewWorker.perform_async(3)
    NewWorker.set(queue="default").bulk_perform_async([[4]])
    assert {j.job_class for j in Api(new).queue("default").jobs()} == {"NewName"}
    run_burst(new)
    assert sorted(ran[-2:]) == [("new", 3), ("new", 4)]  # two threads: either may finish first
    # Too early for an old node? It cannot run the new name, but retries it instead of losing it.
    NewWorker.perform_async(5)
    run_burst(old)
    assert retrying(r) == 1
    retry_now(new)
    run_burst(new)
    assert ran[-1] == ("new", 5) and retrying(r) == 0
    # A job enqueued explicitly under the old name keeps it.
    new.enqueue("OldName", 6)
    assert Api(new).queue("default").jobs()[0].job_class == "OldName"


def test_removal_through_the_deprecated_no_op(
    releases: tuple[App, App, Ran], r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    old, new, ran = releases

    @old.job(name="ExampleWorker")
    class OldWorker(Job):
        def perform(self, object_id: int) -> None:
            ran.append(("old", object_id))

    @new.job(name="ExampleWorker", deprecated=True)
    class Deprecated(Job):
        def perform(self, object_id: int) -> None:
            raise AssertionError("a deprecated job's perform must not run")

    OldWorker.perform_async(1)
    # Arguments this release's class does not take (pushed raw: enqueue would refuse them).
    extra = [2, "an-extra-argument@example.com", {"k": [1]}]
    old.client.push_payload({"class": "ExampleWorker", "args": extra})
    caplog.set_level(logging.INFO, logger="conveyor.transitions")
    worker = run_burst(new)
    assert worker.counters.processed == 2 and retrying(r) == 0 and ran == []
    notes = [rec.getMessage() for rec in caplog.records if rec.name == "conveyor.transitions"]
    assert len(notes) == 1 and "ExampleWorker is deprecated" in notes[0], "logged once"
    assert "example.com" not in notes[0], "no arguments in the log"

    # A node still on the old release runs what the new one enqueues (until producers stop).
    Deprecated.perform_async(3)
    run_burst(old)
    assert ran == [("old", 3)]


def test_deprecated_runs_as_a_no_op_in_the_testing_modes(app: App) -> None:
    @app.job(deprecated=True)
    def old_thing(x: int) -> None:
        raise AssertionError("not run")

    with app.testing.inline():
        assert old_thing.perform_async(1, 2, 3)


def test_enqueue_as_must_name_an_alias(app: App) -> None:
    @app.job(enqueue_as={"old": "Previous", "flag": "renamed"})
    class Renamed(Job):
        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"add aliases=\('Previous',\)"):
        Renamed.perform_async()
    with pytest.raises(ConfigurationError, match="flag name 'Not A Flag' is not valid"):
        enqueue_as("Previous", flag="Not A Flag")


# -- a rolling deploy with real worker processes -------------------------------------------------

ROLLING = str(APPS / "compat" / "rolling.py")


@pytest.fixture
def spawn(redis_url: str, processes: StartProcess) -> Callable[[str], subprocess.Popen[bytes]]:
    def start(release: str) -> subprocess.Popen[bytes]:
        return processes(
            ROLLING,
            release,
            CONVEYOR_REDIS_URL=redis_url,
            CONVEYOR_CONCURRENCY="2",
            CONVEYOR_HEARTBEAT_INTERVAL="0.3",
            CONVEYOR_POLL_INTERVAL_AVERAGE="0.2",
            CONVEYOR_SHUTDOWN_TIMEOUT="3",
        )

    return start


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_rolling_deploy_two_releases_run_each_others_jobs(
    spawn: Callable[[str], subprocess.Popen[bytes]], redis_url: str, r: redis.Redis
) -> None:
    """Release M-1 and M run side by side as real processes on one Redis while both enqueue;
    every job runs exactly once, on either release, with no retry. Then M-1 stops, the flag
    goes on, and producers switch to the new name."""
    old_node, new_node = spawn("old"), spawn("new")
    wait_for(lambda: r.scard("processes") == 2, timeout=20)
    settings = Settings(redis_url=redis_url)
    old, new = rolling.build("old", settings), rolling.build("new", settings)
    jids: dict[str, str] = {}  # jid -> what was enqueued
    for i in range(20):
        for app, release in ((old, "old"), (new, "new")):
            jids[app.find("OldName").perform_async(i).jid] = f"{release}:rename"  # type: ignore[union-attr]
            jids[app.find("ExampleWorker").perform_async(i).jid] = f"{release}:optional"  # type: ignore[union-attr]
        jids[old.find("Doomed").perform_async(i).jid] = "old:doomed"  # type: ignore[union-attr]
    assert {json.loads(j)["class"] for j in r.lrange("queue:default", 0, -1)} <= {
        "OldName",
        "ExampleWorker",
        "Doomed",
    }, "with the flag off, release M enqueues the old name"

    def ran() -> list[list[str]]:
        return [entry.split(":", 3) for entry in r.lrange("ran", 0, -1)]

    wait_for(lambda: len(ran()) >= len(jids), timeout=30)
    runs = ran()
    assert sorted(jid for _, _, jid, _ in runs) == sorted(jids), "each job ran exactly once"
    assert r.zcard("retry") == 0 and r.zcard("dead") == 0
    assert {release for release, _, _, _ in runs} == {"old", "new"}, "both releases took jobs"
    for release, name, jid, args in runs:
        kind = jids[jid].split(":")[1]
        expected = {
            ("old", "rename"): "OldName",
            ("new", "rename"): "NewName",
            ("old", "optional"): "ExampleWorker",
            ("new", "optional"): "ExampleWorker",
            ("old", "doomed"): "Doomed",
            ("new", "doomed"): "noop",
        }[(release, kind)]
        assert name == expected, (release, name, jids[jid])
        if (release, kind) == ("new", "optional"):
            assert json.loads(args)[1] is None

    # Every node runs M now: stop M-1, turn the flag on; producers enqueue the new name.
    old_node.send_signal(signal.SIGTERM)
    assert old_node.wait(15) == 0
    Flags.of(new).enable("new_name")
    late = new.find("NewName").perform_async(99).jid  # type: ignore[union-attr]
    wait_for(lambda: any(jid == late for _, _, jid, _ in ran()), timeout=15)
    assert ran()[-1][:2] == ["new", "NewName"]
    new_node.send_signal(signal.SIGTERM)
    assert new_node.wait(15) == 0
    old.close()
    new.close()
