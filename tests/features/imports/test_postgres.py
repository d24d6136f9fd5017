"""The project importer against a real PostgreSQL server (``postgresql+psycopg://``): a full
import, duplicated record jobs delivered at the same time (the ``ON CONFLICT`` writes under
PostgreSQL's locking), bad records, ``retry-missing``, SIGKILL in the middle of a stage, and
PostgreSQL's stricter types (64-bit ids, NUL characters, a label id twice in one batch).

A throwaway server (tests/apps/imports/postgres.py) runs for this module; each test gets its own
database. Skipped only when no PostgreSQL binaries or no psycopg are installed (.ci/run
installs both)."""

from __future__ import annotations

import itertools
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from apps.imports import fixtures
from apps.imports.postgres import PostgresServer, unavailable
from sqlalchemy import Engine, create_engine, text
from support import APPS, StartProcess, running_worker, wait_for

from conveyor import App, Settings
from conveyor.errors import RecordError
from conveyor.features.imports import Imports, ImportSettings
from conveyor.features.imports.project import ProjectImporter, start_project_import
from conveyor.features.imports.project.schema import create_schema, dispose_engines
from conveyor.features.imports.stage_jobs import RECORD_JOB

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))

TABLES = ["users", "projects", "labels", "issues", "issue_labels", "comments"]
APP = str(APPS / "imports" / "worker_app.py")
_names = itertools.count(1)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        dispose_engines()
        server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    name = f"conveyor_test_{next(_names)}"
    url = pg_server.create_database(name)
    yield url
    dispose_engines()  # the engines of this process hold connections to it
    pg_server.drop_database(name)


class Db:
    """Plain SQL on the test database, through an engine of its own."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    def all(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(sql), params)

    def counts(self) -> dict[str, int]:
        return {t: self.all(f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}

    def ids(self, table: str) -> list[int]:
        return [r[0] for r in self.all(f"SELECT export_id FROM {table} ORDER BY export_id")]


@pytest.fixture
def db(pg_url: str) -> Iterator[Db]:
    made = Db(pg_url)
    yield made
    made.engine.dispose()


class Env:
    def __init__(self, settings: Settings, url: str, tmp: Path, **import_settings: Any) -> None:
        self.app = App(settings.replace(queues="imports"))
        self.imports = Imports(self.app, ImportSettings(**import_settings))
        self.importer = ProjectImporter(label_batch=4)
        self.imports.register(self.importer)
        self.url, self.tmp = url, tmp

    def start(self, source: Path) -> str:
        return start_project_import(self.imports, source, self.url, workdir=str(self.tmp))

    def wait(self, import_id: str) -> str:
        with running_worker(self.app):
            wait_for(lambda: not self.imports.get(import_id).active, timeout=60)
        return import_id

    def run(self, source: Path) -> str:
        return self.wait(self.start(source))


@pytest.fixture
def env(settings: Settings, pg_url: str, tmp_path: Path) -> Iterator[Env]:
    made = Env(settings, pg_url, tmp_path)
    yield made
    made.app.close()


def full_rows(issues: int, per_issue: int) -> dict[str, int]:
    return {
        "users": 5,  # four authors and the owner
        "projects": 1,
        "labels": 6,
        "issues": issues,
        "issue_labels": issues * 2,
        "comments": issues * per_issue,
    }


def test_full_import_into_postgresql(env: Env, db: Db) -> None:
    source = fixtures.build(env.tmp / "export.tar.gz", issue_count=10, per_issue=3)
    import_id = env.run(source)
    state = env.imports.get(import_id)
    assert state.status == "finished", state.error
    assert env.imports.failures(import_id) == []
    assert db.counts() == full_rows(10, 3)
    assert db.ids("issues") == [1000 + n for n in range(1, 11)]
    assert db.ids("comments") == sorted(c["id"] for c in fixtures.comments(10, 3))
    assert db.ids("labels") == [label["id"] for label in fixtures.labels()]
    assert db.all("SELECT issues_count, labels_count FROM projects") == [(10, 6)]
    # Every field arrived as exported (PostgreSQL checks types and lengths; SQLite does not).
    expected = {i["id"]: i for i in fixtures.issues(10)}
    rows = db.all(
        "SELECT i.export_id, i.iid, i.title, i.description, i.state, i.created_at, u.username "
        "FROM issues i JOIN users u ON u.id = i.author_id"
    )
    for export_id, iid, title, description, state_, created_at, username in rows:
        issue = expected[export_id]
        assert (iid, title, description, state_, created_at, username) == (
            issue["iid"],
            issue["title"],
            issue["description"],
            issue["state"],
            issue["created_at"],
            issue["author"]["username"],
        )
    links = db.all(
        "SELECT i.export_id, l.name FROM issue_labels il JOIN labels l ON l.id = il.label_id "
        "JOIN issues i ON i.id = il.issue_id ORDER BY i.export_id, l.name"
    )
    assert links == sorted((i["id"], name) for i in expected.values() for name in i["labels"])
    assert db.all(
        "SELECT p.export_id, p.path, p.name, u.username FROM projects p "
        "JOIN users u ON u.id = p.owner_id"
    ) == [(fixtures.PROJECT_ID, "acme/billing-api", "Billing API", fixtures.OWNER["username"])]


def _deliver_twice_at_once(imports: Imports, jobs: list[list[str]]) -> list[str]:
    """Run every record job twice, both deliveries at the same moment on two threads. A
    delivery that ends with a retryable error runs again, as the worker's retry would."""
    errors: list[str] = []

    def deliver(args: list[str], barrier: threading.Barrier) -> None:
        barrier.wait(10)
        for _ in range(5):
            try:
                imports.run_record(*args)
                return
            except RecordError as exc:
                if not exc.retryable:
                    raise
        errors.append(f"{args[2]}: still failing after 5 runs")

    for args in jobs:
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=deliver, args=(args, barrier)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    return errors


def test_duplicated_record_jobs_write_each_row_once(env: Env, db: Db, r: redis.Redis) -> None:
    source = fixtures.build(env.tmp / "export.tar.gz", issue_count=6, per_issue=2)
    import_id = env.start(source)
    queue = "queue:imports"
    for stage in ("validate", "project", "labels"):
        r.delete(queue)
        env.imports.run_stage(import_id, stage)
    for stage, total in (("issues", 6), ("comments", 12)):
        r.delete(queue)
        env.imports.run_stage(import_id, stage)
        payloads = [json.loads(p) for p in r.lrange(queue, 0, -1)]
        jobs = [p["args"] for p in payloads if p["class"].endswith(RECORD_JOB.split(".")[-1])]
        assert len(jobs) == total, payloads
        r.delete(queue)
        assert _deliver_twice_at_once(env.imports, jobs) == []
        # The second delivery of each job found its token gone: counted once, stage advanced.
        progress = {s.name: (s.total, s.done, s.failed) for s in env.imports.get(import_id).stages}
        assert progress[stage] == (total, total, 0)
    r.delete(queue)
    env.imports.run_stage(import_id, "finish")
    state = env.imports.get(import_id)
    assert state.status == "finished", state.error
    assert env.imports.failures(import_id) == []
    assert db.counts() == full_rows(6, 2)
    assert db.ids("issues") == [1000 + n for n in range(1, 7)]
    assert db.ids("comments") == sorted(c["id"] for c in fixtures.comments(6, 2))
    assert db.all("SELECT issues_count, labels_count FROM projects") == [(6, 6)]


def test_bad_records_are_failures_and_the_rest_imports(env: Env, db: Db) -> None:
    good = fixtures.issues(4)[0]
    comment = fixtures.comments(4, 1)[0]
    label = fixtures.labels()[0]
    source = fixtures.build(
        env.tmp / "export.tar.gz",
        issue_count=4,
        per_issue=1,
        extra_labels=[
            {"id": 90, "name": "odd", "color": "red", "description": ""},
            {**label, "id": 91, "name": "nul", "description": "a\u0000b"},
            # The same label twice in one batch: PostgreSQL refuses to update a row twice in
            # one INSERT ... ON CONFLICT DO UPDATE; the last one wins, as on SQLite.
            {**label, "id": 92, "name": "twice", "description": "first"},
            {**label, "id": 92, "name": "twice", "description": "second"},
        ],
        extra_issues=[
            {**good, "id": 2001, "title": ""},
            {**good, "id": 2002, "state": "reopened"},
            {**good, "id": 2003, "title": "NUL \u0000 in a title"},
            {**good, "id": 2004, "iid": 2**31},  # fits 64 bits, not PostgreSQL's integer
            {**good, "id": 2**63},  # fits neither database
            "{not json",
        ],
        extra_comments=[
            {**comment, "id": 70001, "issue_id": 2001},
            {**comment, "id": 70002, "body": ""},
            {**comment, "id": 3_000_000_001, "issue_id": 2004},  # a 64-bit id
            {**comment, "id": 70003, "body": "lone surrogate \ud800"},
        ],
    )
    import_id = env.run(source)
    state = env.imports.get(import_id)
    assert state.status == "finished", state.error
    failures = {(f.stage, f.record_id): f for f in env.imports.failures(import_id)}
    line_failures = {k for k in failures if k[1].startswith("@")}
    assert set(failures) - line_failures == {
        ("labels", "90"),
        ("labels", "91"),
        ("issues", "2001"),
        ("issues", "2002"),
        ("issues", "2003"),
        ("comments", "70001"),
        ("issues", str(2**63)),
        ("comments", "70001"),
        ("comments", "70002"),
        ("comments", "70003"),
    }
    assert len(line_failures) == 1, "the line that is not JSON"
    assert "'description' contains a NUL character" in failures["labels", "91"].message
    assert "'title' contains a NUL character" in failures["issues", "2003"].message
    assert "'id' must be a whole number from 1 to" in failures["issues", str(2**63)].message
    assert "'body' is not valid Unicode text" in failures["comments", "70003"].message
    assert all(not f.retryable for f in failures.values())
    assert db.ids("issues") == [1001, 1002, 1003, 1004, 2004]
    assert db.all("SELECT iid FROM issues WHERE export_id = 2004") == [(2**31,)]
    assert db.ids("comments") == sorted(
        [c["id"] for c in fixtures.comments(4, 1)] + [3_000_000_001]
    )
    assert db.ids("labels") == [*(lb["id"] for lb in fixtures.labels()), 92]
    assert db.all("SELECT description FROM labels WHERE export_id = 92") == [("second",)]


def test_retry_missing_restores_exactly_the_deleted_rows(env: Env, db: Db) -> None:
    source = fixtures.build(env.tmp / "export.tar.gz", issue_count=8, per_issue=2)
    first = env.run(source)
    before = db.counts()
    gone = "SELECT id FROM issues WHERE export_id IN (1002, 1005)"
    db.execute(f"DELETE FROM comments WHERE issue_id IN ({gone})")
    db.execute(f"DELETE FROM issue_labels WHERE issue_id IN ({gone})")
    db.execute("DELETE FROM issues WHERE export_id IN (1002, 1005)")
    db.execute("DELETE FROM comments WHERE export_id = 50070")
    db.execute("UPDATE issues SET title = 'edited after import' WHERE export_id = 1001")
    db.execute("UPDATE comments SET body = 'edited comment' WHERE export_id = 50030")
    db.execute("UPDATE projects SET name = 'Renamed'")
    assert db.counts()["issues"] == 6

    retry = env.wait(env.imports.retry_missing(first))
    state = env.imports.get(retry)
    assert (state.status, state.mode, state.parent) == ("finished", "missing", first)
    progress = {s.name: (s.total, s.done) for s in state.stages}
    assert progress["issues"] == (2, 2), "only the missing issues were imported again"
    assert progress["comments"] == (5, 5), "their four comments and the one deleted alone"
    assert db.counts() == before
    assert db.ids("issues") == [1000 + n for n in range(1, 9)]
    assert db.ids("comments") == sorted(c["id"] for c in fixtures.comments(8, 2))
    assert db.all("SELECT title FROM issues WHERE export_id = 1001") == [("edited after import",)]
    assert db.all("SELECT body FROM comments WHERE export_id = 50030") == [("edited comment",)]
    assert db.all("SELECT name FROM projects") == [("Renamed",)]
    restored = db.all(
        "SELECT count(*) FROM issue_labels il JOIN issues i ON i.id = il.issue_id "
        "WHERE i.export_id IN (1002, 1005)"
    )
    assert restored == [(4,)], "restored issues got their labels back"


def _create_schema_at_once(engines: list[Engine]) -> list[Exception]:
    """``create_schema`` on every engine at the same moment, one thread each; the errors."""
    errors: list[Exception] = []
    barrier = threading.Barrier(len(engines))

    def first_use(engine: Engine) -> None:
        barrier.wait(10)
        try:
            create_schema(engine)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=first_use, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return errors


def test_workers_creating_the_schema_at_once(pg_url: str, db: Db) -> None:
    """Worker processes that take their first job at the same moment each create the schema
    on first use (one engine each); none may fail because of another's CREATE TABLE."""
    for _ in range(3):  # three rounds on an empty database
        db.execute("DROP TABLE IF EXISTS comments, issue_labels, issues, labels, projects, users")
        engines = [create_engine(pg_url) for _ in range(4)]
        errors = _create_schema_at_once(engines)
        for engine in engines:
            engine.dispose()
        assert errors == []
        assert db.counts() == dict.fromkeys(TABLES, 0)


CRASH_ENV = {
    "CONVEYOR_CONCURRENCY": "3",
    "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
    "CONVEYOR_LIVENESS_TTL": "2",
    "CONVEYOR_RECOVERY_INTERVAL": "0.5",
    "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.2",
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("pause", ["issues:record:1005", "labels:batch:2"])
def test_sigkill_mid_stage_resumes_with_exact_rows(
    pause: str,
    *,
    processes: StartProcess,
    redis_url: str,
    r: redis.Redis,
    pg_url: str,
    db: Db,
    tmp_path: Path,
) -> None:
    issues, per_issue = 12, 2
    marker = tmp_path / "paused"
    app = App(Settings(redis_url=redis_url))
    imports = Imports(app)
    imports.register(ProjectImporter())
    source = fixtures.build(tmp_path / "export.tar.gz", issue_count=issues, per_issue=per_issue)
    env = {"CONVEYOR_REDIS_URL": redis_url, **CRASH_ENV}
    victim = processes(APP, IMPORT_PAUSE=pause, IMPORT_PAUSE_FILE=str(marker), **env)
    import_id = start_project_import(imports, source, pg_url, workdir=str(tmp_path))

    wait_for(marker.exists, timeout=30, interval=0.05)
    state = imports.get(import_id)
    assert (state.status, state.stage) == ("running", pause.split(":", 1)[0]), "paused mid-stage"
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    survivor = processes(APP, **env)
    wait_for(lambda: imports.get(import_id).status != "running", timeout=45, interval=0.1)
    state = imports.get(import_id)
    assert state.status == "finished", state.error
    assert imports.failures(import_id) == []
    assert db.counts() == full_rows(issues, per_issue)
    assert db.ids("issues") == [1000 + n for n in range(1, issues + 1)]
    assert db.ids("comments") == sorted(c["id"] for c in fixtures.comments(issues, per_issue))
    progress = {s.name: (s.total, s.done) for s in state.stages}
    assert progress["issues"] == (issues, issues), "each record counted once"
    assert db.all("SELECT issues_count, labels_count FROM projects") == [(issues, 6)]
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    app.close()
