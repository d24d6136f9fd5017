"""The import toolkit and the project importer, in process (SPEC IMP-1, IMP-3 … IMP-9): rows
written, failures per record, refusals before any row, partial retry, the importing flag, bulk
hooks, spreading under the concurrency limit and the health-signal deferral."""

from __future__ import annotations

import io
import logging
import sqlite3
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from apps.imports import fixtures
from sqlalchemy import select
from sqlalchemy.orm import Session
from support import running_worker, wait_for

from conveyor import App, Settings
from conveyor.core.retry import default_backoff
from conveyor.errors import UploadRejected
from conveyor.features.imports import Imports, ImportSettings, UploadLimits, importing
from conveyor.features.imports.project import ProjectImporter, start_project_import
from conveyor.features.imports.project.schema import Issue, Project, engine_for

TABLES = ["users", "projects", "labels", "issues", "issue_labels", "comments"]


def counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return dict.fromkeys(TABLES, 0)
    with sqlite3.connect(db) as conn:
        have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] if t in have else 0
            for t in TABLES
        }


def ids(db: Path, table: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return sorted(r[0] for r in conn.execute(f"SELECT export_id FROM {table}"))


class Env:
    def __init__(self, app: App, imports: Imports, importer: ProjectImporter, tmp: Path) -> None:
        self.app, self.imports, self.importer, self.tmp = app, imports, importer, tmp
        self.db = tmp / "projects.db"
        self.url = f"sqlite:///{self.db}"

    def start(self, source: Path, **kwargs: Any) -> str:
        return start_project_import(self.imports, source, self.url, workdir=str(self.tmp), **kwargs)

    def run(self, source: Path) -> str:
        return self.wait(self.start(source))

    def wait(self, import_id: str) -> str:
        """Run a worker until the import ended. (A burst worker could stop early: record jobs
        deferred by the concurrency limit leave the queue empty for a moment.)"""
        with running_worker(self.app):
            wait_for(lambda: not self.imports.get(import_id).active, timeout=60)
        return import_id


def make_env(settings: Settings, tmp_path: Path, **import_settings: Any) -> Env:
    app = App(settings.replace(queues="imports"))
    imports = Imports(app, ImportSettings(**import_settings))
    importer = ProjectImporter(label_batch=4)
    imports.register(importer)
    return Env(app, imports, importer, tmp_path)


@pytest.fixture
def env(settings: Settings, tmp_path: Path) -> Iterator[Env]:
    made = make_env(settings, tmp_path)
    yield made
    made.app.close()


def test_an_export_is_imported_stage_by_stage(env: Env) -> None:
    source = fixtures.build(env.tmp / "export.tar.gz", issue_count=10, per_issue=3)
    import_id = env.run(source)
    state = env.imports.get(import_id)
    assert state.status == "finished"
    assert [s.name for s in state.stages] == list(ProjectImporter.stages)
    assert all(s.advanced_at for s in state.stages)
    progress = {s.name: (s.total, s.done, s.failed) for s in state.stages}
    assert progress["issues"] == (10, 10, 0)
    assert progress["comments"] == (30, 30, 0)
    assert counts(env.db) == {
        "users": 5,  # four authors and the owner
        "projects": 1,
        "labels": 6,
        "issues": 10,
        "issue_labels": 20,
        "comments": 30,
    }
    # Issue hooks were skipped while importing; the finish stage recounted once.
    with sqlite3.connect(env.db) as conn:
        assert conn.execute("SELECT issues_count, labels_count FROM projects").fetchone() == (10, 6)
        labels = conn.execute(
            "SELECT l.name FROM issue_labels il JOIN labels l ON l.id = il.label_id "
            "JOIN issues i ON i.id = il.issue_id WHERE i.export_id = 1001 ORDER BY l.name"
        ).fetchall()
    assert [n for (n,) in labels] == ["feature", "security"]
    assert env.imports.failures(import_id) == []
    assert not (env.tmp / f"conveyor-import-{import_id}").exists(), "extraction cleaned up"


def test_bad_records_land_in_the_failure_list_and_the_rest_imports(env: Env) -> None:
    good = fixtures.issues(4)[0]
    source = fixtures.build(
        env.tmp / "export.tar.gz",
        issue_count=4,
        per_issue=1,
        extra_labels=[{"id": 90, "name": "odd", "color": "red", "description": ""}],
        extra_issues=[
            {**good, "id": 2001, "title": ""},
            {**good, "id": 2002, "state": "reopened"},
            "{not json",
            {**good, "id": "x"},
        ],
        extra_comments=[
            {
                "id": 70001,
                "issue_id": 2001,
                "body": "on a failed issue",
                "author": fixtures.AUTHORS[0],
                "created_at": "2024-01-01T00:00:00Z",
            },
            {
                "id": 70002,
                "issue_id": 1001,
                "body": "",
                "author": None,
                "created_at": "2024-01-01T00:00:00Z",
            },
        ],
    )
    import_id = env.run(source)
    state = env.imports.get(import_id)
    assert state.status == "finished", "bad records never fail the import"
    failures = {(f.stage, f.record_id): f for f in env.imports.failures(import_id)}
    assert set(failures) == {
        ("labels", "90"),
        ("issues", "2001"),
        ("issues", "2002"),
        ("comments", "70001"),
        ("comments", "70002"),
    } | {k for k in failures if k[0] == "issues" and k[1].startswith("@")}
    line_failures = [k for k in failures if k[1].startswith("@")]
    assert len(line_failures) == 2, "the line that is not JSON and the one without an id"
    assert "'title' must be a non-empty string" in failures["issues", "2001"].message
    assert "'state' must be one of opened, closed" in failures["issues", "2002"].message
    assert "its issue 2001 is not in the database" in failures["comments", "70001"].message
    assert "'color' must look like" in failures["labels", "90"].message
    assert all(
        f.error_class == "conveyor.errors.RecordError" and not f.retryable
        for f in failures.values()
    )
    assert ids(env.db, "issues") == [1001, 1002, 1003, 1004]
    assert ids(env.db, "comments") == sorted(c["id"] for c in fixtures.comments(4, 1))
    assert ids(env.db, "labels") == [label["id"] for label in fixtures.labels()]
    progress = {s.name: (s.total, s.done, s.failed) for s in state.stages}
    assert progress["issues"] == (8, 8, 4)
    assert progress["comments"] == (6, 6, 2)


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def _bomb(path: Path) -> Path:
    return _tar(path, [_file("issues.jsonl", b"\n" * (30 * 1024 * 1024))])


@pytest.mark.parametrize(
    ("build", "limits", "fragment"),
    [
        (lambda p: _tar(p, [_file("../../evil.jsonl", b"{}")]), None, "climbs out"),
        (lambda p: _tar(p, [_link("issues.jsonl", "../../../etc/passwd")]), None, "symbolic link"),
        (_bomb, None, "decompression bomb"),
        (
            fixtures.build,
            UploadLimits(max_upload_bytes=200),
            "over the limit of 200",
        ),
        (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64), p)[1], None, "not an archive"),
    ],
    ids=["path-traversal", "symlink-escape", "tar-bomb", "oversized", "wrong-type"],
)
def test_malicious_archives_are_refused_before_any_row(
    build: Any, limits: UploadLimits | None, fragment: str, env: Env
) -> None:
    source = build(env.tmp / "upload.tar.gz")
    with pytest.raises(UploadRejected, match=fragment):
        env.start(source, limits=limits)
    assert env.imports.recent() == [], "no import was created"
    assert counts(env.db) == dict.fromkeys(TABLES, 0)
    # Even when started without the check, the validate stage refuses it before any write.
    import_id = env.imports.start(
        "project_export", {"source": str(source), "db": env.url, "workdir": str(env.tmp)}
    )
    env.importer.limits = limits
    env.wait(import_id)
    state = env.imports.get(import_id)
    assert state.status == "failed"
    assert state.error.startswith("upload refused:") and fragment in state.error
    assert counts(env.db) == dict.fromkeys(TABLES, 0)


def test_retry_missing_restores_exactly_the_deleted_rows(env: Env) -> None:
    source = fixtures.build(env.tmp / "export.tar.gz", issue_count=8, per_issue=2)
    first = env.run(source)
    before = counts(env.db)
    with sqlite3.connect(env.db) as conn:
        gone = conn.execute("SELECT id FROM issues WHERE export_id IN (1002, 1005)").fetchall()
        for (issue_id,) in gone:
            conn.execute("DELETE FROM comments WHERE issue_id = ?", (issue_id,))
            conn.execute("DELETE FROM issue_labels WHERE issue_id = ?", (issue_id,))
            conn.execute("DELETE FROM issues WHERE id = ?", (issue_id,))
        conn.execute("DELETE FROM comments WHERE export_id = 50070")
        conn.execute("UPDATE issues SET title = 'edited after import' WHERE export_id = 1001")
        conn.execute("UPDATE comments SET body = 'edited comment' WHERE export_id = 50030")
        conn.execute("UPDATE projects SET name = 'Renamed'")
    assert counts(env.db)["issues"] == 6

    retry = env.wait(env.imports.retry_missing(first))
    state = env.imports.get(retry)
    assert (state.status, state.mode, state.parent) == ("finished", "missing", first)
    progress = {s.name: (s.total, s.done) for s in state.stages}
    assert progress["issues"] == (2, 2), "only the missing issues were imported again"
    assert progress["comments"] == (5, 5), "their four comments and the one deleted alone"
    assert counts(env.db) == before
    assert ids(env.db, "issues") == [1000 + n for n in range(1, 9)]
    assert ids(env.db, "comments") == sorted(c["id"] for c in fixtures.comments(8, 2))
    with sqlite3.connect(env.db) as conn:
        assert conn.execute("SELECT title FROM issues WHERE export_id = 1001").fetchone() == (
            "edited after import",
        )
        assert conn.execute("SELECT body FROM comments WHERE export_id = 50030").fetchone() == (
            "edited comment",
        )
        assert conn.execute("SELECT name FROM projects").fetchone() == ("Renamed",)
        restored = conn.execute(
            "SELECT count(*) FROM issue_labels il JOIN issues i ON i.id = il.issue_id "
            "WHERE i.export_id IN (1002, 1005)"
        ).fetchone()
    assert restored == (4,), "restored issues got their labels back"


def test_importing_flag_skips_application_hooks_and_bulk_hooks_run(env: Env) -> None:
    seen: list[tuple[str, list[int]]] = []
    env.importer.bulk_hooks.add("labels", lambda table, ids: seen.append((table, list(ids))))
    env.run(fixtures.build(env.tmp / "export.tar.gz", issue_count=2, per_issue=0))
    assert sorted(i for _, batch in seen for i in batch) == [
        label["id"] for label in fixtures.labels()
    ]
    assert len(seen) == 2, "six labels in batches of four: the hook ran after each bulk insert"

    engine = engine_for(env.url)
    with Session(engine) as session:
        project = session.scalars(select(Project)).one()
        session.add(
            Issue(
                project_id=project.id,
                export_id=9001,
                iid=99,
                title="by hand",
                state="opened",
                created_at="2024-01-01T00:00:00Z",
            )
        )
        session.commit()
        session.refresh(project)
        assert project.issues_count == 3, "outside an import the application hook counts"
        with importing():
            session.add(
                Issue(
                    project_id=project.id,
                    export_id=9002,
                    iid=100,
                    title="imported",
                    state="opened",
                    created_at="2024-01-01T00:00:00Z",
                )
            )
            session.commit()
        session.refresh(project)
        assert project.issues_count == 3, "inside an import the hook skips its work"
        marked = Issue(
            project_id=project.id,
            export_id=9003,
            iid=101,
            title="marked",
            state="opened",
            created_at="2024-01-01T00:00:00Z",
        )
        marked.importing = True
        session.add(marked)
        session.commit()
        session.refresh(project)
        assert project.issues_count == 3


def test_record_jobs_are_spread_and_concurrency_limited(settings: Settings, tmp_path: Path) -> None:
    env = make_env(
        settings,
        tmp_path,
        spread_per_interval=4,
        spread_interval=60.0,
        record_concurrency=2,
        chunk_size=3,  # waves span chunks: 3 + 1 of the next chunk start now
    )
    r = env.app.store.client
    assert env.imports.record_job.conveyor_options["concurrency_limit"] == 2
    assert env.imports.stage_job.conveyor_options["retry"] == 6
    import_id = env.start(fixtures.build(tmp_path / "export.tar.gz", issue_count=10, per_issue=0))
    for stage in ("validate", "project", "labels"):
        r.delete("queue:imports")
        env.imports.run_stage(import_id, stage)
    r.delete("queue:imports")
    now = env.app.clock.time()
    env.imports.run_stage(import_id, "issues")
    assert r.llen("queue:imports") == 4, "the first wave runs now"
    delays = sorted(round(at - now) for _, at in r.zrange("schedule", 0, -1, withscores=True))
    assert delays == [60, 60, 60, 60, 120, 120]
    assert env.imports.get(import_id).stage == "issues", "waits for its records"
    env.app.close()


def test_stage_retries_take_about_twenty_minutes() -> None:
    shortest = sum(default_backoff(n, _Fixed(0)) for n in range(6))
    longest = sum(default_backoff(n, _Fixed(1)) for n in range(6))
    assert 15 * 60 < shortest < longest < 25 * 60


class _Fixed:
    """A stand-in random source: always the lowest (0) or highest (1) jitter."""

    def __init__(self, end: int) -> None:
        self.end = end

    def randrange(self, n: int) -> int:
        return (n - 1) * self.end


class Saturation:
    """A health signal raised for its first ``times`` checks."""

    def __init__(self, times: int) -> None:
        self.left = times
        self.lock = threading.Lock()

    def saturated(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left >= 0


def test_health_signal_defers_write_jobs_until_it_clears(
    settings: Settings, tmp_path: Path, r: redis.Redis
) -> None:
    env = make_env(settings, tmp_path, defer_delay=0.2)
    env.importer.health_signal = Saturation(5)
    import_id = env.start(fixtures.build(tmp_path / "export.tar.gz", issue_count=6, per_issue=1))
    with running_worker(env.app):
        wait_for(lambda: env.imports.get(import_id).status == "finished", timeout=30)
    state = env.imports.get(import_id)
    assert state.deferred == 5
    assert counts(env.db)["issues"] == 6 and counts(env.db)["comments"] == 6
    env.app.close()


# -- issue 19: bulk stages and the pre-check -------------------------------------------------------


def test_bulk_inserted_labels_get_counts_and_a_line_each(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """``status`` showed labels 0/0 although they were imported, and no label had its
    per-record line (issue 19)."""
    bad = {"id": 90, "name": "odd", "color": "red", "description": ""}
    with caplog.at_level(logging.INFO, logger="conveyor.imports"):
        import_id = env.run(
            fixtures.build(
                env.tmp / "export.tar.gz", issue_count=1, per_issue=0, extra_labels=[bad]
            )
        )
    state = env.imports.get(import_id)
    labels = {s.name: (s.total, s.done, s.failed) for s in state.stages}["labels"]
    assert labels == (7, 7, 1), "six imported and the bad one, counted once each"
    lines = [
        rec.msg
        for rec in caplog.records
        if isinstance(rec.msg, dict) and rec.msg.get("record_type") == "label"
    ]
    imported = sorted(int(m["record_id"]) for m in lines if m["status"] == "imported")
    assert imported == [label["id"] for label in fixtures.labels()]
    assert [m["record_id"] for m in lines if m["status"] == "failed"] == ["90"]


def test_an_archive_without_project_json_creates_no_import(env: Env) -> None:
    """The docs say no import is created for such an archive; one was, and then failed."""
    archive = env.tmp / "no-project.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b'{"id": 1}\n'
        info = tarfile.TarInfo("issues.jsonl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UploadRejected, match=r"no project\.json at its top level"):
        start_project_import(env.imports, archive, env.url)
    assert env.imports.recent() == []
