"""remove_jobs and migrate_queue (SPEC COMPAT-3, COMPAT-4): every place, dry runs, re-runs, and
runs under concurrent producers and a running worker where every job is accounted for."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import redis
from support import running_worker, wait_for

from conveyor import App, FakeClock, Job, JobContext, ServerMiddleware, Settings
from conveyor.core.payload import new_jid
from conveyor.errors import ConfigurationError
from conveyor.features.compat.maintenance import (
    MigrationReport,
    migrate_queue,
    remove_jobs,
    requeued,
)
from conveyor.features.cron import Cron, CronEntry
from conveyor.redis import Keys
from conveyor.redis.maintenance import ListPlace, MaintenanceStore

K = Keys()


def payload(cls: str, jid: str, queue: str = "default", **extra: object) -> str:
    return json.dumps({"class": cls, "args": [1, []], "queue": queue, "jid": jid, **extra})


def everywhere(r: redis.Redis, cls: str) -> Counter[str]:
    """Where jobs of ``cls`` are, by place (read with the raw client, independently)."""
    found: Counter[str] = Counter()

    def count(place: str, raws: list[str]) -> None:
        for raw in raws:
            if json.loads(raw).get("class") == cls:
                found[place] += 1

    for key in r.scan_iter("queue:*"):
        count(key, r.lrange(key, 0, -1))
    for key in r.scan_iter("conveyor:working:*"):
        count(key, r.lrange(key, 0, -1))
    for key in r.scan_iter("conveyor:limit:*:deferred"):
        count(key, r.lrange(key, 0, -1))
    for zset in ("schedule", "retry", "dead", "interrupted"):
        count(zset, r.zrange(zset, 0, -1))
    return found


@pytest.fixture
def filled(r: redis.Redis) -> redis.Redis:
    """Jobs of ``Gone`` (and its alias ``Gone2``) and ``Keep`` in every place."""
    for i in range(5):
        r.lpush("queue:default", payload("Gone", f"q{i}"), payload("Keep", f"k{i}"))
    r.lpush("queue:low", payload("Gone2", "low", queue="low"))
    r.sadd("queues", "default", "low")
    r.zadd("schedule", {payload("Gone", "s1"): 10, payload("Keep", "s2"): 20})
    r.zadd("retry", {payload("Gone", "r1", retry_count=2): 30, payload("Keep", "r2"): 40})
    r.zadd("dead", {payload("Gone", "d1"): 50})
    r.zadd("interrupted", {payload("Gone", "i1"): 60})
    r.lpush(K.limit_deferred("Gone"), payload("Gone", "def1"))
    r.sadd(K.limit_registry, "Gone")
    # A dead process (no liveness key) and a live one, each holding a Gone job.
    r.lpush(K.working("dead:1:aa"), payload("Gone", "w-dead"), payload("Keep", "w-keep"))
    r.lpush(K.working("live:2:bb"), payload("Gone", "w-live"))
    r.sadd(K.working_registry, "dead:1:aa", "live:2:bb")
    r.set(K.liveness("live:2:bb"), 1, ex=60)
    # An ActiveJob wrapper names the real class in 'wrapped'.
    r.lpush(
        "queue:default",
        json.dumps(
            {"class": "ActiveJob::JobWrapper", "wrapped": "Gone", "args": [{}], "jid": "aj"}
        ),
    )
    return r


def test_remove_jobs_from_queues_sets_and_deferred_lists(app: App, filled: redis.Redis) -> None:
    report = remove_jobs(app, ["Gone", "Gone2"])
    assert report.removed == {
        "queue:default": 6,
        "queue:low": 1,
        "schedule": 1,
        "retry": 1,
        "deferred:Gone": 1,
    }
    assert (report.total, report.running, report.orphaned) == (10, 1, 1)
    left = everywhere(filled, "Gone")
    assert left == {
        "dead": 1,
        "interrupted": 1,
        K.working("dead:1:aa"): 1,
        K.working("live:2:bb"): 1,
    }, "dead, interrupted and working lists are only swept when asked"
    assert everywhere(filled, "Keep") == {
        "queue:default": 5,
        "schedule": 1,
        "retry": 1,
        K.working("dead:1:aa"): 1,
    }
    assert remove_jobs(app, ["Gone", "Gone2"]).total == 0, "a second run finds nothing"

    again = remove_jobs(app, ["Gone"], include_dead=True, include_working=True)
    assert again.removed == {"dead": 1, "interrupted": 1, "working:dead:1:aa": 1}
    assert everywhere(filled, "Gone") == {K.working("live:2:bb"): 1}, (
        "a live process's working list is never touched"
    )
    assert filled.lrange(K.working("dead:1:aa"), 0, -1) == [payload("Keep", "w-keep")]


def test_dry_run_counts_without_changing_anything(app: App, filled: redis.Redis) -> None:
    before = {k: filled.dump(k) for k in filled.scan_iter("*")}
    report = remove_jobs(
        app, ["Gone", "Gone2"], include_dead=True, include_working=True, dry_run=True
    )
    assert report.dry_run and report.total == 13
    assert report.removed["working:dead:1:aa"] == 1 and report.running == 1
    assert {k: filled.dump(k) for k in filled.scan_iter("*")} == before


def test_job_classes_bring_their_aliases(app: App, r: redis.Redis) -> None:
    @app.job(aliases=("OldName",), deprecated=True)
    class NewName(Job):
        def perform(self) -> None: ...

    r.lpush("queue:default", payload("OldName", "a"), payload("NewName", "b"))
    r.sadd("queues", "default")
    assert remove_jobs(app, [NewName]).removed == {"queue:default": 2}
    with pytest.raises(ConfigurationError, match="job classes or wire names"):
        remove_jobs(app, [42])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="'stop' is not an action"):
        remove_jobs(app, ["X"], cron="stop")  # type: ignore[arg-type]


def test_small_chunks_remove_every_match_and_keep_the_rest_in_order(
    app: App, r: redis.Redis
) -> None:
    jobs = [payload("Gone" if i % 3 else "Keep", f"j{i}") for i in range(200)]
    r.lpush("queue:default", *jobs)
    r.sadd("queues", "default")
    report = remove_jobs(app, ["Gone"], chunk=7)
    kept = [j for j in jobs if '"Keep"' in j]
    assert report.total == len(jobs) - len(kept)
    assert r.lrange("queue:default", 0, -1) == list(reversed(kept)), "order and bytes kept"


def test_cron_entries_are_destroyed_or_disabled(app: App, r: redis.Redis) -> None:
    cron = Cron(app)
    cron.put(CronEntry("gone-nightly", "0 3 * * *", "Gone", args=[1, []]))
    cron.put(CronEntry("keep-nightly", "0 3 * * *", "Keep"))
    r.set(K.cron_tick("gone-nightly"), 123)
    assert remove_jobs(app, ["Gone"], cron="disable", dry_run=True).cron == {
        "gone-nightly": "would be disabled"
    }
    assert remove_jobs(app, ["Gone"], cron="disable").cron == {"gone-nightly": "disabled"}
    entry = cron.get("gone-nightly")
    assert entry.enabled is False and entry.args == [1, []], "only 'enabled' changed"
    assert remove_jobs(app, ["Gone"], cron="disable").cron == {"gone-nightly": "already disabled"}
    assert remove_jobs(app.store, ["Gone"]).cron == {"gone-nightly": "destroyed"}  # a Store too
    assert [e.name for e in cron.entries()] == ["keep-nightly"]
    assert not r.exists(K.cron_tick("gone-nightly"))


def test_migrate_queue_moves_rewrites_and_keeps_everything_else(app: App, r: redis.Redis) -> None:
    odd = '{"class":"A","args":[[],{}],"queue":"old","jid":"%s","at":1.0e-05,"x":{"y":[]}}'
    r.lpush("queue:old", *(odd % i for i in range(5)))  # j4 is the newest
    r.lpush("queue:new", payload("A", "already", queue="new"))
    r.sadd("queues", "old", "new")
    r.zadd("schedule", {odd % "s": 10, payload("A", "elsewhere", queue="other"): 11})
    r.zadd("retry", {payload("A", "r", queue="old", retry_queue="old"): 12})
    r.zadd("dead", {payload("A", "d", queue="old"): 13})

    dry = migrate_queue(app, "old", "new", dry_run=True)
    assert dry.moved == {"schedule": 1, "retry": 1, "queue:old": 5}
    assert r.llen("queue:old") == 5

    report = migrate_queue(app, "old", "new")
    assert report.moved == {"schedule": 1, "retry": 1, "queue:old": 5}
    assert (report.remaining, report.forgotten) == (0, True)
    assert r.smembers("queues") == {"new"}
    assert r.lrange("queue:new", 0, -1) == [
        *(odd.replace('"old"', '"new"') % i for i in range(4, -1, -1)),
        payload("A", "already", queue="new"),
    ], "moved behind the jobs already there, oldest next, bytes otherwise untouched"
    [(sched, score)] = r.zrange("schedule", 0, 0, withscores=True)
    assert sched == odd.replace('"old"', '"new"') % "s" and score == 10
    assert json.loads(r.zrange("retry", 0, 0)[0])["retry_queue"] == "new"
    assert json.loads(r.zrange("dead", 0, 0)[0])["queue"] == "old", "dead only when asked"
    assert migrate_queue(app, "old", "new", include_dead=True).moved == {"dead": 1}
    assert migrate_queue(app, "old", "new").total == 0, "a second run finds nothing"
    with pytest.raises(ConfigurationError, match="two different queue names"):
        migrate_queue(app, "same", "same")


def test_requeued_leaves_a_payload_that_is_not_a_job_as_it_is() -> None:
    assert requeued("not json", "old", "new") == "not json"
    assert json.loads(requeued(payload("A", "x", queue="old"), "old", "new"))["queue"] == "new"


def test_follow_repeats_runs_on_the_injected_clock(settings: Settings, r: redis.Redis) -> None:
    clock = FakeClock()
    app = App(settings, clock=clock)
    r.lpush("queue:old", payload("A", "1", queue="old"))
    report = migrate_queue(app, "old", "new", follow=5)
    assert report.passes == 6 and report.moved == {"queue:old": 1}
    assert remove_jobs(app, ["A"], follow=2.5).passes == 4
    app.close()


# -- under concurrent producers and a running worker ---------------------------------------------


class Recorder(ServerMiddleware):
    """First in the chain: records every job the worker finished, skipped ones too."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ran: list[tuple[str, str, str, str | None]] = []

    def after_perform(self, ctx: JobContext, error: BaseException | None) -> None:
        with self.lock:
            self.ran.append((ctx.job["class"], ctx.job["jid"], ctx.queue, ctx.skipped))


@pytest.fixture
def worker_app(settings: Settings) -> Iterator[tuple[App, Recorder]]:
    app = App(dataclasses.replace(settings, concurrency=4))

    @app.job(name="Keep")
    class Keep(Job):
        def perform(self, i: int, extra: list[int]) -> None: ...

    @app.job(name="Gone", deprecated=True)
    class Gone(Job):
        def perform(self, i: int) -> None:
            raise AssertionError("a deprecated job must not run")

    recorder = Recorder()
    app.server_middleware.prepend(recorder)
    yield app, recorder
    app.close()


def producers(app: App, count: int, make: object) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    assert callable(make)

    def produce(n: int) -> None:
        i = 0
        while not stop.is_set():
            make(n, i)
            i += 1

    threads = [threading.Thread(target=produce, args=(n,), daemon=True) for n in range(count)]
    for t in threads:
        t.start()
    return stop, threads


@pytest.mark.timeout(60)
def test_remove_jobs_under_producers_and_a_worker_accounts_for_every_job(
    worker_app: tuple[App, Recorder], r: redis.Redis
) -> None:
    app, recorder = worker_app
    producer = App(app.settings)
    pushed: dict[str, set[str]] = {"Keep": set(), "Gone": set()}
    lock = threading.Lock()

    def push(n: int, i: int) -> None:
        cls = "Gone" if i % 2 else "Keep"
        args = [i] if cls == "Gone" else [i, []]
        at = producer.clock.time() - 1 if i % 5 == 0 else None  # due: the poller promotes
        jid = (
            producer.enqueue(cls, *args, at=at).jid
            if at is None
            else _schedule(producer, cls, args, at)
        )
        with lock:
            pushed[cls].add(jid)

    # A backlog first: queue, schedule and retry entries that are due.
    for i in range(600):
        push(0, i)
    for i in range(100):
        jid = f"retry{i:020d}"
        r.zadd("retry", {payload("Gone", jid, retry_count=1): 1.0})
        pushed["Gone"].add(jid)

    reports = []
    with running_worker(app):
        stop, threads = producers(producer, 3, push)
        for _ in range(3):
            reports.append(remove_jobs(app, ["Gone"], chunk=50))
        stop.set()
        for t in threads:
            t.join(10)
        reports.append(remove_jobs(app, ["Gone"], chunk=50))  # after the producers stopped
        wait_for(lambda: not everywhere(r, "Keep") and not everywhere(r, "Gone"), timeout=30)
    producer.close()

    ran = Counter((cls, jid) for cls, jid, _, _ in recorder.ran)
    assert all(n == 1 for n in ran.values()), "no job ran twice"
    assert {jid for cls, jid in ran if cls == "Keep"} == pushed["Keep"], "every Keep job ran"
    assert all(skip == "deprecated" for cls, _, _, skip in recorder.ran if cls == "Gone")
    gone_ran = {jid for cls, jid in ran if cls == "Gone"}
    removed = sum(rep.total for rep in reports)
    assert not gone_ran - pushed["Gone"]
    assert len(gone_ran) + removed == len(pushed["Gone"]), (
        "each Gone job either ran (as the deprecated no-op) or was removed, never both"
    )
    assert removed > 0 and len(pushed["Gone"]) > 400
    assert not everywhere(r, "Gone"), "nothing left behind"


def migrate(app: App, reports: list[MigrationReport]) -> None:
    reports.append(migrate_queue(app, "old", "new", chunk=25))


def _schedule(app: App, cls: str, args: list[object], at: float) -> str:
    """A job in the schedule set that is already due (perform_at in the past would enqueue)."""
    job = {"class": cls, "args": args, "queue": "default", "retry": True, "jid": new_jid()}
    app.store.client.zadd(app.store.keys.schedule, {json.dumps(job): at})
    return str(job["jid"])


@pytest.mark.timeout(60)
def test_migrate_queue_under_producers_and_a_worker_moves_every_job(
    worker_app: tuple[App, Recorder], r: redis.Redis
) -> None:
    app, recorder = worker_app
    # The worker listens only on the new queue: a job left behind on 'old' would never run.
    app.configure(dataclasses.replace(app.settings, queues=(("new", 1),)))
    producer = App(app.settings)
    pushed: set[str] = set()
    lock = threading.Lock()

    def push(n: int, i: int) -> None:
        jid = producer.enqueue("Keep", i, [], queue="old").jid
        with lock:
            pushed.add(jid)

    for i in range(500):
        push(0, i)
    future = app.clock.time() + 3600
    for i in range(50):
        r.zadd("schedule", {payload("Keep", f"due{i}", queue="old", args=[i, []]): 1.0})
        r.zadd("retry", {payload("Keep", f"later{i}", queue="old"): future})
        pushed.add(f"due{i}")

    reports: list[MigrationReport] = []
    with running_worker(app):
        stop, threads = producers(producer, 3, push)
        for _ in range(3):  # two operators at once: each job must still move only once
            both = [threading.Thread(target=migrate, args=(app, reports)) for _ in range(2)]
            for t in both:
                t.start()
            for t in both:
                t.join(30)
        stop.set()
        for t in threads:
            t.join(10)
        reports.append(migrate_queue(app, "old", "new", chunk=25))  # the late arrivals
        wait_for(lambda: len(recorder.ran) >= len(pushed), timeout=30)
    producer.close()

    ran = Counter(jid for _, jid, _, _ in recorder.ran)
    assert set(ran) == pushed and all(n == 1 for n in ran.values()), "each job ran once"
    assert {queue for _, _, queue, _ in recorder.ran} == {"new"}
    assert not r.exists("queue:old") and "old" not in r.smembers("queues")
    assert reports[-1].remaining == 0 and reports[-1].forgotten
    later = [json.loads(raw) for raw in r.zrange("retry", 0, -1)]
    assert len(later) == 50 and {job["queue"] for job in later} == {"new"}
    assert sum(rep.total for rep in reports) >= 500 + 50


def test_list_removal_finds_entries_shifted_by_pushes_since_they_were_read(
    app: App, r: redis.Redis
) -> None:
    ms = MaintenanceStore(app.store)
    place = ListPlace("queue", "default")
    r.lpush("queue:default", *(payload("Gone", f"g{i}") for i in range(10)))
    r.sadd("queues", "default")
    read = list(enumerate(ms.list_range(place, 0, -1)))
    r.lpush("queue:default", *(payload("Keep", f"k{i}") for i in range(5)))  # a producer
    assert ms.remove_from_list(place, read[:4]) == 4
    r.lpush("queue:default", *(payload("Keep", f"late{i}") for i in range(100)))
    assert ms.remove_from_list(place, read[4:], from_tail=True) == 0, (
        "shifted further than the window: left for the next run, nothing else touched"
    )
    assert r.llen("queue:default") == 111
    assert remove_jobs(app, ["Gone"]).total == 6
    left = r.lrange("queue:default", 0, -1)
    assert len(left) == 105 and all('"Keep"' in raw for raw in left), "no tombstone left"
    r.set(K.liveness("me"), 1)
    r.lpush(K.working("me"), payload("Gone", "mine"))
    assert ms.remove_from_list(ListPlace("working", "me"), [(0, payload("Gone", "mine"))]) == -1


# -- refusals (issue 19) --------------------------------------------------------------------------


def test_remove_jobs_refuses_a_bare_string_instead_of_removing_its_letters(
    app: App, r: redis.Redis
) -> None:
    """``remove_jobs(app, "ExampleWorker")`` used to iterate the characters and remove nothing
    (or jobs of a class named ``E``)."""
    r.sadd("queues", "default")
    r.lpush("queue:default", payload("ExampleWorker", new_jid()), payload("E", new_jid()))
    with pytest.raises(ConfigurationError, match=r"got 'ExampleWorker' alone; pass a list"):
        remove_jobs(app, "ExampleWorker")  # type: ignore[arg-type]

    @app.job()
    class Gone(Job):
        def perform(self) -> None: ...

    with pytest.raises(ConfigurationError, match=r"got Gone alone; pass a list: \[Gone\]"):
        remove_jobs(app, Gone)  # type: ignore[arg-type]
    assert r.llen("queue:default") == 2
    assert remove_jobs(app, ["ExampleWorker"]).total == 1


def test_remove_jobs_refuses_names_nothing_knows(app: App, r: redis.Redis) -> None:
    r.sadd("queues", "default")
    r.lpush("queue:default", payload("ExampleWorker", new_jid()))
    with pytest.raises(ConfigurationError, match=r"'ExampleWorkr' is registered or declared"):
        remove_jobs(app, ["ExampleWorker", "ExampleWorkr"])
    assert r.llen("queue:default") == 1, "nothing removed when a name is refused"
    # Found in Redis (a retired class): fine, and remembered, so a re-run is fine too.
    assert remove_jobs(app, ["ExampleWorker"]).total == 1
    assert remove_jobs(app.store, ["ExampleWorker"]).total == 0
    # Registered but idle: fine. A typo only on request.

    @app.job()
    def idle() -> None: ...

    assert remove_jobs(app, ["idle"]).total == 0
    assert remove_jobs(app, ["ExampleWorkr"], allow_unknown=True).total == 0


def test_migrate_queue_refuses_an_unknown_queue(app: App, r: redis.Redis) -> None:
    """``migrate_queue(app, "typo", ...)`` used to report 0 silently."""
    r.sadd("queues", "mailers")
    r.lpush("queue:mailers", payload("Mail", new_jid(), queue="mailers"))
    with pytest.raises(ConfigurationError, match=r"queue 'mailres' is unknown.*queues: mailers"):
        migrate_queue(app, "mailres", "mail")
    assert migrate_queue(app, "mailers", "mail").total == 1
    assert migrate_queue(app, "mailers", "mail").total == 0, "a re-run knows the queue"
    # Only scheduled jobs are bound for it: known.
    r.zadd("schedule", {payload("Later", new_jid(), queue="sleepy"): 1})
    assert migrate_queue(app, "sleepy", "awake").moved == {"schedule": 1}
    assert migrate_queue(app, "mailres", "mail", allow_unknown=True).total == 0
