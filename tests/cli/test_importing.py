"""``conveyor import run|status|retry-missing`` (conveyor.cli.importing) with a real Redis and a
SQLite file: the command validates, imports with its own worker and reports."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest
import redis
from apps.imports import fixtures
from click.testing import CliRunner, Result
from support import PYTHON, ROOT, python_env

from conveyor import Settings
from conveyor.cli import main
from conveyor.features.imports import Imports
from conveyor.features.imports.project.worker import build_app


@pytest.fixture
def cli(redis_url: str, r: redis.Redis) -> CliRunner:
    return CliRunner(
        env={
            "CONVEYOR_REDIS_URL": redis_url,
            "COLUMNS": "200",
            "CONVEYOR_POLL_INTERVAL_AVERAGE": "0.2",
        }
    )


def run(cli: CliRunner, *args: str) -> Result:
    return cli.invoke(main, list(args), catch_exceptions=False)


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_run_status_and_retry_missing(cli: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    source = fixtures.build(tmp_path / "export.tar.gz", issue_count=5, per_issue=1)
    result = run(
        cli,
        "import",
        "run",
        str(source),
        "--db",
        f"sqlite:///{db}",
        "--watch",
        "--workdir",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    import_id = result.output.split()[1]
    assert "finished" in result.output and "5/5" in result.output
    assert (count(db, "issues"), count(db, "comments")) == (5, 5)

    listing = run(cli, "import", "status")
    assert import_id in listing.output and "project_export" in listing.output
    shown = json.loads(run(cli, "import", "status", import_id, "--json").output)
    assert shown["status"] == "finished" and shown["failures"] == []
    assert {s["name"]: s["done"] for s in shown["stages"]}["issues"] == 5

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM comments WHERE export_id IN (50010, 50030)")
    retried = run(cli, "import", "retry-missing", import_id)
    assert retried.exit_code == 0, retried.output
    assert f"(missing records of {import_id})" in retried.output
    assert count(db, "comments") == 5
    for person in fixtures.PERSONAL_DATA:
        assert person not in result.output + retried.output


def test_a_refused_upload_writes_nothing(cli: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    bad = tmp_path / "notes.tar.gz"
    bad.write_text("just text, not an archive")
    result = cli.invoke(main, ["import", "run", str(bad), "--db", f"sqlite:///{db}"])
    assert result.exit_code == 1
    assert "the upload is not an archive" in result.output
    assert not db.exists()
    assert "no imports" in run(cli, "import", "status").output


def test_status_masks_a_database_password(cli: CliRunner, redis_url: str) -> None:
    app = build_app(Settings(redis_url=redis_url))
    options = {"source": "/x.tar.gz", "db": "postgresql://importer:s3cret@db.internal/app"}
    import_id = Imports.of(app).start("project_export", options)
    app.close()
    shown = json.loads(run(cli, "import", "status", import_id, "--json").output)
    assert shown["options"]["db"] == "postgresql://importer:***@db.internal/app"
    assert "s3cret" not in run(cli, "import", "status", "--json").output


def test_status_of_an_unknown_import(cli: CliRunner) -> None:
    result = cli.invoke(main, ["import", "status", "nope"])
    assert result.exit_code == 1
    assert "no import 'nope'" in result.output


def test_the_example_export_imports_with_its_broken_records_listed(
    cli: CliRunner, tmp_path: Path
) -> None:
    script = ROOT / "examples" / "imports" / "build_export.py"
    archive = tmp_path / "sample.tar.gz"
    subprocess.run(
        [PYTHON, str(script), str(archive), "--issues", "6", "--comments", "1", "--broken"],
        check=True,
        env=python_env(),
        capture_output=True,
    )
    db = tmp_path / "out.db"
    result = run(cli, "import", "run", str(archive), "--db", f"sqlite:///{db}")
    assert result.exit_code == 0, result.output
    import_id = result.output.split()[1]
    shown = json.loads(run(cli, "import", "status", import_id, "--json").output)
    failed = {(f["stage"], f["record_id"]) for f in shown["failures"]}
    named = {("comments", "99001"), ("issues", "9001"), ("issues", "9002")}
    ((stage, line),) = failed - named
    assert stage == "issues" and line.startswith("@"), "the line that is not JSON"
    assert (count(db, "issues"), count(db, "comments")) == (6, 6)


def test_run_configures_logging_one_json_line_per_record(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """``import run`` never configured logging: dict reprs with ``_conveyor_scrubbed``,
    CONVEYOR_LOG_FORMAT ignored, per-record lines lost (issue 19). A real process, as a user
    runs it."""
    source = fixtures.build(tmp_path / "export.tar.gz", issue_count=3, per_issue=1)
    env = python_env(
        CONVEYOR_REDIS_URL=redis_url,
        CONVEYOR_LOG_FORMAT="json",
        CONVEYOR_POLL_INTERVAL_AVERAGE="0.2",
    )
    db = f"sqlite:///{tmp_path / 'out.db'}"
    args = ["-m", "conveyor.cli", "import", "run", str(source), "--db", db]
    done = subprocess.run(
        [PYTHON, *args, "--workdir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert "_conveyor_scrubbed" not in done.stderr
    kinds = {(x.get("record_type"), x.get("status")) for x in records if x["event"] == "record"}
    assert {("label", "imported"), ("issue", "imported"), ("comment", "imported")} <= kinds
    assert all(x["importer"] == "project_export" for x in records if x["event"] == "record")
    for person in fixtures.PERSONAL_DATA:
        assert person not in done.stderr + done.stdout
