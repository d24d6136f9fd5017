"""SIGKILL a worker in the middle of each import stage (SPEC IMP-5, IMP-7): a fresh worker
resumes from the progress pointers and pending sets, and the import ends with exactly the
right rows, none twice."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest
import redis
from apps.imports import fixtures
from support import APPS, StartProcess, wait_for

from conveyor import App, Settings
from conveyor.features.imports import Imports
from conveyor.features.imports.project import ProjectImporter, start_project_import

APP = str(APPS / "imports" / "worker_app.py")
ISSUES, PER_ISSUE = 12, 2
FAST = {
    "CONVEYOR_CONCURRENCY": "3",
    "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
    "CONVEYOR_LIVENESS_TTL": "2",
    "CONVEYOR_RECOVERY_INTERVAL": "0.5",
    "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.2",
}


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = ["users", "projects", "labels", "issues", "issue_labels", "comments"]
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def export_ids(db: Path, table: str) -> list[int]:
    with sqlite3.connect(db) as conn:
        return sorted(r[0] for r in conn.execute(f"SELECT export_id FROM {table}"))


EXPECTED = {
    "users": 5,  # four authors and the owner
    "projects": 1,
    "labels": 6,
    "issues": ISSUES,
    "issue_labels": ISSUES * 2,
    "comments": ISSUES * PER_ISSUE,
}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("pause", "chunk"),
    [
        ("validate:extracted", "200"),
        ("project:saved", "200"),
        ("labels:batch:2", "200"),
        ("issues:chunk:5", "5"),  # the stage job itself, after scheduling 5 of 12 records
        ("issues:record:1005", "200"),  # a record job, after its row was committed
        ("comments:record:50051", "200"),
        ("finish:recounted", "200"),
    ],
)
def test_sigkill_mid_stage_resumes_with_exact_rows(
    pause: str,
    chunk: str,
    *,
    processes: StartProcess,
    redis_url: str,
    r: redis.Redis,
    tmp_path: Path,
) -> None:
    db = tmp_path / "projects.db"
    marker = tmp_path / "paused"
    app = App(Settings(redis_url=redis_url))
    imports = Imports(app)
    imports.register(ProjectImporter())
    source = fixtures.build(tmp_path / "export.tar.gz", issue_count=ISSUES, per_issue=PER_ISSUE)
    env = {"CONVEYOR_REDIS_URL": redis_url, "IMPORT_CHUNK": chunk, **FAST}
    victim = processes(APP, IMPORT_PAUSE=pause, IMPORT_PAUSE_FILE=str(marker), **env)
    import_id = start_project_import(imports, source, f"sqlite:///{db}", workdir=str(tmp_path))

    wait_for(marker.exists, timeout=30, interval=0.05)
    stage = pause.split(":", maxsplit=1)[0]
    state = imports.get(import_id)
    assert (state.status, state.stage) == ("running", stage), "paused in the middle of the stage"
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)

    survivor = processes(APP, **env)
    wait_for(lambda: imports.get(import_id).status != "running", timeout=45, interval=0.1)
    state = imports.get(import_id)
    assert state.status == "finished", state.error
    assert imports.failures(import_id) == []
    assert counts(db) == EXPECTED
    assert export_ids(db, "issues") == [1000 + n for n in range(1, ISSUES + 1)]
    comments = fixtures.comments(ISSUES, PER_ISSUE)
    assert export_ids(db, "comments") == sorted(c["id"] for c in comments)
    progress = {s.name: (s.total, s.done) for s in state.stages}
    assert progress["issues"] == (ISSUES, ISSUES), "each record counted once"
    assert progress["comments"] == (ISSUES * PER_ISSUE, ISSUES * PER_ISSUE)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT issues_count, labels_count FROM projects").fetchone() == (
            ISSUES,
            6,
        )
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    app.close()
