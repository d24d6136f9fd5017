"""The session log scan (tests/support/log_scan.py) finds fixture personal data in any log of the
run, and fails the run when it does; proven by running pytest on small test files in a subprocess
whose temp directory lies outside this session's (so its leaks are not ours)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.imports.fixtures import PERSONAL_DATA
from support import PYTHON, ROOT
from support.log_scan import SESSION_LOG, log_files, scan


@pytest.fixture
def outside() -> Iterator[Path]:
    """A directory outside this session's basetemp (whose *.log files the scan reads)."""
    with tempfile.TemporaryDirectory(prefix="conveyor-logscan-") as name:
        yield Path(name)


def run_pytest(workdir: Path, test_source: str) -> subprocess.CompletedProcess[str]:
    (workdir / "test_inner.py").write_text(textwrap.dedent(test_source))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
    return subprocess.run(
        [
            PYTHON,
            "-m",
            "pytest",
            "-p",
            "support.log_scan",
            "-p",
            "no:cacheprovider",
            "-q",
            "--basetemp",
            str(workdir / "basetemp"),
            "test_inner.py",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_scan_matches_case_insensitively_and_json_escaped(outside: Path) -> None:
    log = outside / "proc-0.log"
    log.write_text(
        "clean line\n"
        '{"event": "by J\\u00fcrgen_fx"}\n'
        "hello ADA.FX@EXAMPLE.COM\n"
        "[email] and [redacted] only\n"
    )
    findings = scan([log], ["jürgen_fx", "ada.fx@example.com", "nobody"])
    assert [(f.line, f.found) for f in findings] == [(2, "jürgen_fx"), (3, "ada.fx@example.com")]
    assert str(findings[0]).startswith(f"{log}:2: ")


USERNAMES = [value for value in PERSONAL_DATA if "@" not in value]
EMAILS = [value for value in PERSONAL_DATA if "@" in value]


def test_fixture_data_has_usernames_and_emails() -> None:
    assert len(USERNAMES) >= 2 and len(EMAILS) >= 2


def test_a_run_that_logs_fixture_data_fails_and_names_the_lines(outside: Path) -> None:
    username, email = USERNAMES[0], EMAILS[1]
    done = run_pytest(
        outside,
        f"""
        import logging, subprocess, sys

        def test_username_in_free_text():
            # a username looks like any word: only the scan can catch this one
            logging.getLogger("conveyor.imports").info("issue imported for {username}")

        def test_child_process_prints_an_email(tmp_path):
            with (tmp_path / "proc-0.log").open("wb") as log:
                subprocess.run(
                    [sys.executable, "-c", "import sys; print('to {email}', file=sys.stderr)"],
                    stderr=log, check=True,
                )
        """,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "2 passed" in output  # the tests passed; the scan failed the run
    assert "log scan: fixture personal data found in 2 log line(s)" in output
    assert f"{SESSION_LOG}:1: {username!r}" in output
    assert f"proc-0.log:1: {email!r}" in output


def test_a_run_whose_logs_are_scrubbed_passes(outside: Path) -> None:
    username, email = USERNAMES[-1], EMAILS[-1]
    done = run_pytest(
        outside,
        f"""
        import logging
        from conveyor.logs import import_logger, log_record

        def test_personal_data_only_where_the_scrubber_finds_it():
            log = logging.getLogger("conveyor.imports")
            log.warning("mail to %s failed", {email!r})
            log.warning("author", extra={{"username": {username!r}}})
            imp = import_logger("project_export", "imp-1")
            log_record(imp, "user", 4, "imported", author={{"login": {username!r}, "id": 4}})
        """,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    session_log = outside / "basetemp" / SESSION_LOG
    lines = [json.loads(line) for line in session_log.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["mail to [email] failed", "author", "record"]
    assert lines[1]["username"] == "[redacted]"
    assert lines[2]["author"] == {"login": "[redacted]", "id": 4}
    assert log_files(outside / "basetemp") == [session_log]
