"""Wire compatibility with the real Ruby Sidekiq 6.4 (SPEC CORE-2, DESIGN "Sidekiq wire
compatibility is a contract").

Ruby pushes, Python runs, and the other way round; Sidekiq's own data API (``sidekiq/api``) reads
Conveyor's processes, counters and sets and drives them (retry, reschedule, quiet, stop). Every
job records what it saw in Redis (``interop:ran``, see tests/apps/interop_app.py and
tests/ruby/workers.rb), so each check rests on an effect observed directly, never on an engine's
own counter.

Tests that need a running Ruby Sidekiq share one server per module, on Redis database 1 so its
heartbeat and stats cannot leak into the tests on database 0. Its scheduled-set poller only runs
while the key ``interop:ruby-poller`` is ``on``, so each test knows which engine promoted a job.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis
from apps.interop_app import RAN_KEY, create_app
from support import PYTHON, TESTS, python_env, wait_for

from conveyor import App, Settings, Worker
from conveyor.api import Api
from conveyor.core.retry import decompress_backtrace

RUBY_DIR = TESTS / "ruby"
T = TypeVar("T")


def _ruby_has(library: str) -> bool:
    try:
        done = subprocess.run(
            ["ruby", "-e", f'require "{library}"'], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


if not _ruby_has("sidekiq"):
    pytest.skip(
        "Ruby Sidekiq is not installed (`ruby -e 'require \"sidekiq\"'` failed); "
        "install it with `apt-get install -y ruby-sidekiq`",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow

#: tests/ruby/push.rb's ARGS, as Python must see them.
RUBY_ARGS: list[Any] = [
    "plain string",
    42,
    -7,
    2**53 + 1,
    3.25,
    {"nested": {"list": [1, "two", None, True, False], "ratio": 0.5}, "empty": {}},
    'unicode: héllo wörld, 日本語, emoji 🚀, quote " and backslash \\',
    [],
    None,
]

#: What Conveyor sends to Ruby.
PY_ARGS: list[Any] = [
    "texte",
    7,
    2.5,
    {"nested": {"k": [1, None, True]}, "n": -1.75},
    'ünïcødé ✓ 🚀 "quoted" \\ back',
    10**15,
    [],
]


# -- helpers --------------------------------------------------------------------------------------
def exact(value: Any) -> str:
    """JSON text of ``value``: equal only when types match too (``3.0`` is not ``3``)."""
    return json.dumps(value, sort_keys=True)


def url_with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        query["db"] = str(db)
        return urlunsplit(parts._replace(query=urlencode(query)))
    return urlunsplit(parts._replace(path=f"/{db}"))


def records(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(line) for line in client.lrange(RAN_KEY, 0, -1)]


def wait_records(
    client: redis.Redis, jids: set[str], timeout: float, **match: Any
) -> dict[str, dict[str, Any]]:
    """The first record of each of ``jids`` (matching ``match``), once all have one."""

    def found() -> dict[str, dict[str, Any]] | None:
        by_jid: dict[str, dict[str, Any]] = {}
        for rec in records(client):
            if rec["jid"] in jids and all(rec.get(k) == v for k, v in match.items()):
                by_jid.setdefault(rec["jid"], rec)
        return by_jid if set(by_jid) == jids else None

    return wait_for(found, timeout, f"jobs {sorted(jids)} to record {match or 'a run'}")


def ruby(script: str, *args: str, url: str, **env_extra: str) -> Any:
    """Run tests/ruby/<script> against ``url`` and parse the JSON it prints."""
    env = {**os.environ, "REDIS_URL": url, **env_extra}
    done = subprocess.run(
        ["ruby", str(RUBY_DIR / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"ruby {script} {' '.join(args)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def snapshot(url: str) -> dict[str, Any]:
    """What Sidekiq's API (Stats, ProcessSet, Workers, the sets, Queue) reports."""
    snap: dict[str, Any] = ruby("api.rb", "snapshot", url=url)
    return snap


def wait_snapshot(
    url: str, condition: Callable[[dict[str, Any]], Any], timeout: float, what: str
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        snap = snapshot(url)
        return snap if condition(snap) else None

    return wait_for(check, timeout, f"Sidekiq's API to report {what}")


def by_jid(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["jid"]: e for e in entries}


@contextlib.contextmanager
def running(app: App) -> Iterator[Worker]:
    """A Conveyor worker in a thread of this process, stopped gracefully on exit."""
    worker = Worker(app)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=20)
        assert not thread.is_alive(), "the Conveyor worker did not stop within 20 s"


@contextlib.contextmanager
def worker_process(url: str, log: Path, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m apps.interop_app``: a real Conveyor worker process, configured by environment."""
    env = python_env(
        CONVEYOR_REDIS_URL=url,
        CONVEYOR_HEARTBEAT_INTERVAL="0.5",
        CONVEYOR_LIVENESS_TTL="2",
        CONVEYOR_POLL_INTERVAL_AVERAGE="0.2",
        CONVEYOR_SHUTDOWN_TIMEOUT="5",
        **{f"CONVEYOR_{k.upper()}": v for k, v in settings.items()},
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [PYTHON, "-m", "apps.interop_app"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def our_process(snap: dict[str, Any], pid: int) -> dict[str, Any] | None:
    return next((p for p in snap["processes"] if p["pid"] == pid), None)


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture
def interop_app(settings: Settings) -> Iterator[App]:
    app = create_app(settings)
    yield app
    app.close()


@pytest.fixture(scope="module")
def ruby_url(redis_url: str) -> str:
    return url_with_db(redis_url, 1)


@pytest.fixture(scope="module")
def ruby_sidekiq(ruby_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One real Ruby Sidekiq server for the module: queues "ruby" and "shared", 5 threads, on
    database 1."""
    workdir = tmp_path_factory.mktemp("ruby-sidekiq")
    ready = workdir / "ready"
    log = workdir / "sidekiq.log"
    env = {**os.environ, "REDIS_URL": ruby_url, "INTEROP_READY_FILE": str(ready)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "ruby",
                str(RUBY_DIR / "server.rb"),
                "-q",
                "ruby",
                "-q",
                "shared",
                "-c",
                "5",
                "-t",
                "5",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Ruby Sidekiq did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def r1(r: redis.Redis, ruby_url: str) -> Iterator[redis.Redis]:
    """Raw client on the Ruby server's database (flushed by ``r``)."""
    client = redis.Redis.from_url(ruby_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def ruby_side_app(settings: Settings, ruby_url: str, r1: redis.Redis) -> Iterator[App]:
    """An interop app on the Ruby server's database; its workers listen on "python"."""
    app = create_app(settings.replace(redis_url=ruby_url, queues="python"))
    yield app
    app.close()


# -- a) Ruby pushes, Conveyor runs ----------------------------------------------------------------
def test_jobs_pushed_by_ruby_run_in_conveyor_with_args_intact(
    r: redis.Redis, redis_url: str, interop_app: App
) -> None:
    jids = ruby("push.rb", "hardworker", url=redis_url)

    # perform_in landed in Sidekiq's schedule set, the other two on queue:default.
    [(raw, due)] = r.zrange("schedule", 0, -1, withscores=True)
    assert json.loads(raw)["jid"] == jids["perform_in"]
    assert r.llen("queue:default") == 2

    with running(interop_app):
        ran = wait_records(r, set(jids.values()), 15, runtime="python")
        time.sleep(0.3)  # a duplicate run would show up by now

    for how, jid in jids.items():
        rec = ran[jid]
        assert rec["class"] == "HardWorker", how
        assert exact(rec["args"]) == exact(RUBY_ARGS), how
        assert rec["queue"] == "default", how
    assert ran[jids["perform_in"]]["at"] >= due, "perform_in ran before its time"
    assert len(records(r)) == 3, "a job ran more than once"


def test_retry_options_from_ruby_payloads_are_honoured(
    r: redis.Redis, redis_url: str, interop_app: App
) -> None:
    token = uuid.uuid4().hex
    items = [
        {"class": "Ruby::OnlyInRuby", "args": [1], "retry": False},
        {"class": "InteropFlaky", "args": [token], "retry": False},
        {"class": "InteropFlaky", "args": [token], "retry": 0},
        {"class": "InteropFlaky", "args": [token], "retry": 0, "dead": False},
        {"class": "InteropFlaky", "args": [token], "retry": 2, "trace_id": "t-123"},
    ]
    unknown, no_retry, retry0, retry0_nodead, retry2 = ruby(
        "push.rb", "raw", json.dumps(items), url=redis_url
    )["jids"]

    with running(interop_app):
        wait_records(r, {no_retry, retry0, retry0_nodead, retry2}, 15, ok=False)
        wait_for(lambda: r.zcard("retry") == 2 and r.zcard("dead") == 1, 10, "retry and dead")
    snap = snapshot(redis_url)

    retries, dead = by_jid(snap["retry"]), by_jid(snap["dead"])
    # retry: 2 is retried, with Sidekiq's failure fields, the Ruby-only field kept.
    entry = retries[retry2]
    assert entry["retry_count"] == 0
    assert entry["error_class"] == "apps.interop_app.InteropError"
    assert entry["error_message"] == f"not allowed yet: {token} ✗"
    assert entry["item"]["trace_id"] == "t-123"
    assert entry["item"]["retry"] == 2
    # A class this process does not know is retried even with retry: false (SPEC CORE-8).
    assert retries[unknown]["error_class"] == "conveyor.errors.UnknownJobClassError"
    # retry: 0 goes straight to the dead set; with dead: false it is dropped; retry: false too.
    assert set(dead) == {retry0}
    assert dead[retry0]["error_class"] == "apps.interop_app.InteropError"
    assert set(retries) == {retry2, unknown}
    assert snap["stats"]["processed"] == 5
    assert snap["stats"]["failed"] == 5


# -- b) Conveyor pushes, Ruby runs ----------------------------------------------------------------
def test_jobs_pushed_by_conveyor_run_in_ruby_sidekiq(
    ruby_sidekiq: int, r1: redis.Redis, ruby_side_app: App
) -> None:
    recorder = ruby_side_app.registry["RubyRecorder"]
    r1.set("interop:ruby-poller", "on")

    now = recorder.perform_async(*PY_ARGS).jid
    later = recorder.perform_in(1, "later", 1.5).jid
    [(_, due)] = r1.zrange("schedule", 0, -1, withscores=True)
    bulk = recorder.bulk_perform_async([[i, f"bulk-{i}"] for i in range(50)])
    assert len(bulk) == 50

    ran = wait_records(r1, {now, later, *bulk}, 30, runtime="ruby")
    time.sleep(0.3)  # a duplicate run would show up by now

    assert {rec["pid"] for rec in ran.values()} == {ruby_sidekiq}
    assert exact(ran[now]["args"]) == exact(PY_ARGS)
    assert exact(ran[later]["args"]) == exact(["later", 1.5])
    assert ran[later]["at"] >= due, "perform_in ran before its time"
    assert int(r1.get("interop:ruby-poller:runs") or 0) >= 1, "Ruby's poller promoted it"
    for i, jid in enumerate(bulk):
        assert ran[jid]["args"] == [i, f"bulk-{i}"]
        assert ran[jid]["payload"]["queue"] == "ruby"
    assert len(records(r1)) == 52, "a job ran more than once"


def test_both_engines_on_one_queue_and_schedule_run_each_job_once(
    ruby_sidekiq: int, r1: redis.Redis, settings: Settings, ruby_url: str
) -> None:
    # Both engines consume queue:shared, and both pollers promote from the same schedule set.
    r1.set("interop:ruby-poller", "on")
    app = create_app(settings.replace(redis_url=ruby_url, queues="shared"))
    try:
        with running(app):
            shared = app.registry["Shared"]
            jids = shared.bulk_perform_async([[i] for i in range(100)])
            jids += app.client.enqueue_bulk(
                shared, [[i] for i in range(100, 200)], at=time.time() + 1
            )
            ran = wait_records(r1, set(jids), 30)
            time.sleep(0.3)  # a duplicate run would show up by now
    finally:
        app.close()

    assert len(records(r1)) == 200, "a job ran more than once"
    assert sorted(rec["args"][0] for rec in ran.values()) == list(range(200))
    assert {rec["runtime"] for rec in ran.values()} == {"ruby", "python"}
    assert r1.llen("queue:shared") == 0
    assert r1.zcard("schedule") == 0


# -- c) Sidekiq's API reads and drives Conveyor --------------------------------------------------
def test_sidekiq_api_sees_conveyor_process_busy_work_and_signals(
    r: redis.Redis, redis_url: str, interop_app: App, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    log = tmp_path / "worker.log"
    with worker_process(
        redis_url,
        log,
        concurrency="3",
        queues="critical,2 default",
        tag="interop",
        labels="blue,green",
    ) as proc:
        blocker = interop_app.registry["InteropBlocker"].perform_async(token).jid
        wait_records(r, {blocker}, 15, phase="started")
        snap = wait_snapshot(
            redis_url,
            lambda s: (p := our_process(s, proc.pid)) and p["busy"] == 1,
            10,
            "the Conveyor process with one busy thread",
        )
        process = our_process(snap, proc.pid)
        assert process is not None
        assert process["identity"].startswith(f"{socket.gethostname()}:{proc.pid}:")
        assert process["hostname"] == socket.gethostname()
        assert process["concurrency"] == 3
        assert process["queues"] == ["critical", "default"]
        assert process["tag"] == "interop"
        assert process["labels"] == ["blue", "green"]
        assert process["stopping"] is False
        assert process["rss"] > 0
        assert time.time() - 5 < process["beat"] <= time.time()
        assert snap["stats"]["processes_size"] == 1
        assert snap["stats"]["workers_size"] == 1
        [work] = snap["workers"]
        assert work["process"] == process["identity"]
        assert work["queue"] == "default"
        assert work["payload"]["jid"] == blocker
        assert work["payload"]["class"] == "InteropBlocker"
        assert work["payload"]["args"] == [token]
        assert abs(work["run_at"] - time.time()) < 30

        # Sidekiq::Process#quiet! through Redis: the process says it is stopping, takes no
        # new job, and its running job still finishes.
        ruby("api.rb", "quiet", process["identity"], url=redis_url)
        wait_snapshot(
            redis_url,
            lambda s: (p := our_process(s, proc.pid)) and p["stopping"],
            10,
            "the Conveyor process as quiet",
        )
        r.lpush(f"interop:release:{token}", "go")
        wait_records(r, {blocker}, 10, phase="done")
        later = interop_app.registry["HardWorker"].perform_async("after quiet").jid
        time.sleep(1.5)
        assert later not in {rec["jid"] for rec in records(r)}, "a quiet process took a job"
        assert proc.poll() is None, "quiet must not stop the process"

        # Sidekiq::Process#stop! through Redis: the process exits and leaves the ProcessSet.
        ruby("api.rb", "stop", process["identity"], url=redis_url)
        assert proc.wait(timeout=15) == 0, log.read_text()

    snap = snapshot(redis_url)
    assert our_process(snap, proc.pid) is None
    assert snap["stats"]["processes_size"] == 0
    [queue] = [q for q in snap["queues"] if q["name"] == "default"]
    assert [job["jid"] for job in queue["jobs"]] == [later], "the untaken job is still queued"


def test_quiet_from_sidekiq_api_starts_no_prefetched_job(
    r: redis.Redis, redis_url: str, interop_app: App, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex
    with worker_process(redis_url, tmp_path / "worker.log", concurrency="1") as proc:
        blocker = interop_app.registry["InteropBlocker"].perform_async(token).jid
        waiting = interop_app.registry["HardWorker"].perform_async("prefetched").jid
        wait_records(r, {blocker}, 15, phase="started")
        snap = wait_snapshot(
            redis_url,
            lambda s: (p := our_process(s, proc.pid)) and p["busy"] == 1,
            10,
            "the Conveyor process with its one thread busy",
        )
        # The second job left the queue: the worker prefetched it while its only thread is busy.
        assert snap["stats"]["enqueued"] == 0
        identity = our_process(snap, proc.pid)["identity"]  # type: ignore[index]

        ruby("api.rb", "quiet", identity, url=redis_url)
        wait_snapshot(
            redis_url,
            lambda s: (p := our_process(s, proc.pid)) and p["stopping"],
            10,
            "the Conveyor process as quiet",
        )
        r.lpush(f"interop:release:{token}", "go")
        wait_records(r, {blocker}, 10, phase="done")
        time.sleep(1.5)
        started_after_quiet = waiting in {rec["jid"] for rec in records(r)}
        ruby("api.rb", "stop", identity, url=redis_url)
        proc.wait(timeout=15)

    assert not started_after_quiet, "a job started after Sidekiq's quiet! reached the process"
    [queue] = [q for q in snapshot(redis_url)["queues"] if q["name"] == "default"]
    assert [job["jid"] for job in queue["jobs"]] == [waiting]


def test_sidekiq_api_reads_conveyor_stats_and_sets(
    r: redis.Redis, redis_url: str, interop_app: App
) -> None:
    jobs = interop_app.registry
    token = uuid.uuid4().hex
    ok = [jobs["HardWorker"].perform_async(i).jid for i in range(5)]
    flaky = jobs["InteropFlaky"].perform_async(token).jid
    doomed = jobs["InteropDoomed"].perform_async("rip").jid
    parked = [jobs["HardWorker"].set(queue="parked").perform_async(i).jid for i in range(3)]
    scheduled_at = time.time() + 3600
    scheduled = jobs["HardWorker"].perform_at(scheduled_at, "later").jid

    started = time.time()
    with running(interop_app):
        wait_records(r, {*ok, flaky, doomed}, 15)
    snap = snapshot(redis_url)
    ran = records(r)

    assert len(ran) == 7
    stats = snap["stats"]
    assert (stats["processed"], stats["failed"]) == (7, 2)
    assert (stats["retry_size"], stats["dead_size"], stats["scheduled_size"]) == (1, 1, 1)
    assert stats["enqueued"] == 3
    assert stats["queues"] == {"default": 0, "parked": 3}
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert snap["history"]["processed"][today] == 7
    assert snap["history"]["failed"][today] == 2

    [retry] = snap["retry"]
    assert retry["jid"] == flaky
    assert retry["klass"] == retry["display_class"] == "InteropFlaky"
    assert retry["args"] == [token]
    assert retry["queue"] == "default"
    assert retry["error"] is True
    assert retry["error_class"] == "apps.interop_app.InteropError"
    assert retry["error_message"] == f"not allowed yet: {token} ✗"
    assert retry["retry_count"] == 0
    assert started - 1 <= retry["failed_at"] <= time.time()
    # Sidekiq's backoff for the first retry: 15 s plus a jitter below 10 s.
    assert 15 <= retry["at"] - retry["failed_at"] < 25
    # Sidekiq decompresses Conveyor's backtrace (Base64 of zlib-deflated JSON).
    assert any("interop_app.py" in line and "perform" in line for line in retry["error_backtrace"])

    [dead] = snap["dead"]
    assert dead["jid"] == doomed
    assert dead["error_class"] == "apps.interop_app.InteropError"
    assert dead["error_message"] == "doomed from the start"

    [later] = snap["schedule"]
    assert later["jid"] == scheduled
    assert later["args"] == ["later"]
    assert abs(later["at"] - scheduled_at) < 0.01

    [queue] = [q for q in snap["queues"] if q["name"] == "parked"]
    assert queue["size"] == 3
    assert 0 <= queue["latency"] < 60
    assert sorted(job["jid"] for job in queue["jobs"]) == sorted(parked)
    assert all(job["klass"] == "HardWorker" for job in queue["jobs"])
    assert all(started - 1 <= job["enqueued_at"] <= time.time() for job in queue["jobs"])


def test_sidekiq_retry_of_a_conveyor_failure_runs_it_again_in_conveyor(
    r: redis.Redis, redis_url: str, interop_app: App
) -> None:
    token = uuid.uuid4().hex
    jid = interop_app.registry["InteropFlaky"].perform_async(token).jid
    with running(interop_app):
        wait_records(r, {jid}, 15, ok=False)
        wait_for(lambda: r.zcard("retry") == 1, 10, "the failure in the retry set")
        [entry] = snapshot(redis_url)["retry"]
        assert entry["jid"] == jid
        r.set(f"interop:allow:{token}", "1")
        ruby("api.rb", "retry", "retry", jid, url=redis_url)
        ran = wait_records(r, {jid}, 15, ok=True)
    snap = snapshot(redis_url)

    assert ran[jid]["payload"]["error_class"] == "apps.interop_app.InteropError"
    assert snap["retry"] == []
    assert (snap["stats"]["processed"], snap["stats"]["failed"]) == (2, 1)


# -- d) Failures cross over ----------------------------------------------------------------------
def test_ruby_failure_lands_in_retry_and_conveyor_poller_promotes_it(
    ruby_sidekiq: int, r1: redis.Redis, ruby_url: str, ruby_side_app: App
) -> None:
    token = uuid.uuid4().hex
    jid = ruby("push.rb", "flaky", token, url=ruby_url)["jid"]
    wait_records(r1, {jid}, 15, runtime="ruby", ok=False)
    [(raw, score)] = wait_for(
        lambda: r1.zrange("retry", 0, -1, withscores=True), 10, "Ruby's retry entry"
    )

    # Sidekiq's retry format, as Conveyor reads it.
    entry = json.loads(raw)
    assert entry["jid"] == jid
    assert entry["class"] == "FlakyRuby"
    assert entry["queue"] == "ruby"
    assert entry["retry"] == 3
    assert entry["retry_count"] == 0
    assert entry["error_class"] == "FlakyRuby::NotYet"
    assert entry["error_message"] == f"not allowed yet: {token} ✗"
    assert 15 <= score - entry["failed_at"] < 25
    backtrace = decompress_backtrace(entry["error_backtrace"])
    assert 0 < len(backtrace) <= 5
    assert "workers.rb" in backtrace[0]

    # Bring the retry forward (Sidekiq would wait 15-25 s) and let Conveyor's poller promote it;
    # Ruby's poller is gated off, so only Conveyor can move it to queue:ruby.
    assert r1.zadd("retry", {raw: time.time() - 1}, xx=True, ch=True) == 1
    r1.set(f"interop:allow:{token}", "1")
    with running(ruby_side_app):
        ran = wait_records(r1, {jid}, 15, runtime="ruby", ok=True)

    assert r1.zcard("retry") == 0
    assert r1.get("interop:ruby-poller:runs") is None, "Ruby's own poller did not run"
    payload = ran[jid]["payload"]
    assert payload["retry_count"] == 0
    assert payload["error_class"] == "FlakyRuby::NotYet"
    assert payload["enqueued_at"] > entry["failed_at"]


def test_conveyor_failure_is_rescheduled_by_sidekiq_api_and_run_by_ruby(
    ruby_sidekiq: int, r1: redis.Redis, ruby_url: str, ruby_side_app: App
) -> None:
    args = ["from python", 3, {"ünï": "cødé ✓"}, 0.25]
    with running(ruby_side_app):
        jid = ruby_side_app.registry["Handoff"].perform_async(*args).jid
        wait_records(r1, {jid}, 15, runtime="python")
        wait_for(lambda: r1.zcard("retry") == 1, 10, "the failure in the retry set")
    # The Conveyor worker is gone: from here on only Ruby acts.

    [entry] = by_jid(snapshot(ruby_url)["retry"]).values()
    assert entry["jid"] == jid
    assert entry["queue"] == "ruby", "retry_queue sends the retry to Ruby's queue"
    assert entry["error_class"] == "apps.interop_app.InteropError"

    # SortedEntry#reschedule re-serializes the entry with Ruby's JSON and ZINCRBYs that member:
    # it only moves the job if Conveyor's JSON is byte-identical to Ruby's.
    ruby("api.rb", "reschedule", "retry", jid, str(time.time() - 1), url=ruby_url)
    assert r1.zcard("retry") == 1, "reschedule duplicated the entry"
    r1.set("interop:ruby-poller", "on")
    ran = wait_records(r1, {jid}, 20, runtime="ruby")

    assert ran[jid]["pid"] == ruby_sidekiq
    assert exact(ran[jid]["args"]) == exact(args)
    assert ran[jid]["payload"]["retry_count"] == 0
    assert r1.zcard("retry") == 0


def test_conveyor_data_api_reads_ruby_sidekiq_and_retries_its_failure(
    ruby_sidekiq: int, r1: redis.Redis, ruby_url: str, settings: Settings
) -> None:
    token = uuid.uuid4().hex
    jid = ruby("push.rb", "flaky", token, url=ruby_url)["jid"]
    wait_records(r1, {jid}, 15, runtime="ruby", ok=False)
    wait_for(lambda: r1.zcard("retry") == 1, 10, "Ruby's retry entry")

    with Api.from_settings(settings.replace(redis_url=ruby_url)) as api:
        busy = api.app.enqueue("RubyBlocker", token, queue="ruby").jid
        wait_records(r1, {busy}, 15, phase="started")
        # Ruby heartbeats every 5 s (and re-registers after the test's FLUSHALL).
        process = wait_for(
            lambda: next(
                (p for p in api.processes.list() if p.pid == ruby_sidekiq and p.busy == 1), None
            ),
            12,
            "the busy Ruby Sidekiq process in Conveyor's ProcessSet",
        )
        assert process.hostname == socket.gethostname()
        assert process.concurrency == 5
        assert process.queues == ["ruby", "shared"]
        assert process.quiet is False
        assert process.identity.startswith(f"{socket.gethostname()}:{ruby_sidekiq}:")
        [work] = api.work.list()
        assert work.identity == process.identity
        assert (work.queue, work.job.jid, work.job.job_class) == ("ruby", busy, "RubyBlocker")
        assert work.job.args == [token]
        r1.lpush(f"interop:release:{token}", "go")

        record = api.retries.get(jid)
        assert (record.job_class, record.args, record.queue) == ("FlakyRuby", [token], "ruby")
        assert record.error_class == "FlakyRuby::NotYet"
        assert record.error_message == f"not allowed yet: {token} ✗"
        assert record.retry_count == 0
        backtrace = record.error_backtrace()
        assert backtrace is not None
        assert "workers.rb" in backtrace[0]

        r1.set(f"interop:allow:{token}", "1")
        api.retries.retry(jid)
    ran = wait_records(r1, {jid}, 15, runtime="ruby", ok=True)

    assert ran[jid]["pid"] == ruby_sidekiq
    assert r1.zcard("retry") == 0
    wait_records(r1, {busy}, 10, phase="done")


def test_sidekiq_reschedule_moves_a_conveyor_entry_with_exponent_floats(
    r: redis.Redis, redis_url: str, interop_app: App
) -> None:
    floats = (1e-05, 2e16, 1234567890123456.0)
    jid = interop_app.registry["HardWorker"].perform_in(3600, *floats).jid
    ruby("api.rb", "reschedule", "schedule", jid, str(time.time() + 60), url=redis_url)
    entries = r.zrange("schedule", 0, -1, withscores=True)
    assert len(entries) == 1, f"one job, {len(entries)} schedule entries: {entries}"


# -- e) Key prefix ------------------------------------------------------------------------------
def test_ruby_namespace_and_conveyor_key_prefix_share_jobs(
    r: redis.Redis, redis_url: str, settings: Settings
) -> None:
    if not _ruby_has("redis-namespace"):
        pytest.skip(
            "the redis-namespace gem is not installed, so Ruby Sidekiq cannot use a key prefix "
            "here (gem install redis-namespace)"
        )
    app = create_app(settings.replace(key_prefix="interop"))
    try:
        jids = ruby("push.rb", "hardworker", url=redis_url, INTEROP_NAMESPACE="interop")
        assert r.llen("interop:queue:default") == 2
        with running(app):
            ran = wait_records(r, set(jids.values()), 15, runtime="python")
        assert all(exact(rec["args"]) == exact(RUBY_ARGS) for rec in ran.values())
        assert int(r.get("interop:stat:processed") or 0) == 3
    finally:
        app.close()
